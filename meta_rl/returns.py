"""Returns, GAE and the linear feature baseline: pure, shape-checked functions.

All inputs are ``[T, E, H]`` (tasks, episodes, horizon) with a ``mask`` that is 1 on steps that
happened. A row holds one episode from its first step, so the sums below never cross episodes.
Time is reduced with one matmul against a discount matrix, not a Python loop.

Termination and truncation are kept apart: a terminated episode's value after its last step is
0; a truncated one bootstraps from ``last_value`` (the value of the observation after the final
step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from meta_rl.config import ReturnsConfig
from meta_rl.episodes import Episodes


def _check_shapes(**tensors: Tensor) -> tuple[int, int, int]:
    shapes = {k: tuple(v.shape) for k, v in tensors.items() if v is not None}
    ref = next(iter(shapes.values()))
    if len(ref) != 3 or any(s != ref for s in shapes.values()):
        raise ValueError(f"expected tensors of one shape [T, E, H], got {shapes}")
    return ref  # type: ignore[return-value]


def _check_last(last: Tensor | None, shape: tuple[int, int, int], name: str) -> None:
    if last is not None and tuple(last.shape) != shape[:2]:
        raise ValueError(f"{name} must have shape [T, E] = {list(shape[:2])}, got {list(last.shape)}")


def discount_matrix(horizon: int, factor: float, device=None, dtype=torch.float32) -> Tensor:
    """``M[k, t] = factor**(k - t)`` for ``k >= t`` else 0, so ``x @ M`` sums ``x`` forward."""
    idx = torch.arange(horizon, device=device)
    power = (idx.view(-1, 1) - idx.view(1, -1)).to(torch.float64)
    m = torch.where(power >= 0, torch.tensor(factor, dtype=torch.float64) ** power.clamp_min(0), 0.0)
    return m.to(dtype)


def _final_step_values(mask: Tensor, truncated: Tensor, last_value: Tensor | None) -> Tensor:
    """``[T, E, H]`` holding ``last_value`` at each truncated final step, 0 elsewhere."""
    if last_value is None:
        return torch.zeros_like(mask)
    return truncated.to(mask.dtype) * mask * last_value.unsqueeze(-1)


def discounted_returns(
    rewards: Tensor,
    mask: Tensor,
    gamma: float,
    truncated: Tensor | None = None,
    last_value: Tensor | None = None,
) -> Tensor:
    """Discounted reward-to-go ``G_t = sum_k gamma^(k-t) r_k`` (+ bootstrap at truncation).

    Shapes: ``rewards, mask, truncated [T, E, H]``, ``last_value [T, E]`` -> ``[T, E, H]``.
    """
    shape = _check_shapes(rewards=rewards, mask=mask, truncated=truncated)
    _check_last(last_value, shape, "last_value")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r = rewards * mask
    if truncated is not None and last_value is not None:
        r = r + gamma * _final_step_values(mask, truncated, last_value)
    m = discount_matrix(shape[2], gamma, rewards.device, rewards.dtype)
    return (r @ m) * mask


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    last_value: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """Generalised advantage estimates ``A_t = sum_k (gamma*lam)^(k-t) delta_k``.

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)``, where ``V`` after the last step is 0 on
    termination and ``last_value`` on truncation. Shapes ``[T, E, H]``; ``last_value [T, E]``.
    """
    shape = _check_shapes(
        rewards=rewards, values=values, mask=mask, terminated=terminated, truncated=truncated
    )
    _check_last(last_value, shape, "last_value")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    values = values * mask
    # V(s_{t+1}) inside an episode is the next value; at its final step it is the bootstrap.
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], -1)
    final = (terminated | truncated).to(mask.dtype) * mask
    next_values = next_values * (1 - final) + _final_step_values(mask, truncated, last_value)
    delta = (rewards + gamma * next_values - values) * mask
    m = discount_matrix(shape[2], gamma * lam, rewards.device, rewards.dtype)
    return (delta @ m) * mask


class LinearFeatureBaseline:
    """The MAML paper's (rllab's) linear baseline, fitted per task in one batched solve.

    Features of a state at step ``t``: ``[o, o^2, t/100, (t/100)^2, (t/100)^3, 1]`` with the
    observation clipped to [-10, 10]. Weights solve the ridge least-squares problem
    ``(X^T X + reg I) w = X^T G`` per task over that task's valid steps, where ``G`` are the
    discounted returns. ``reg`` grows tenfold (up to 5 times) where a solve is not finite.
    """

    def __init__(self, reg: float = 1e-5):
        if not reg > 0:
            raise ValueError(f"reg must be > 0, got {reg}")
        self.reg = reg

    @staticmethod
    def features(obs: Tensor, steps: Tensor) -> Tensor:
        """``obs [..., O]`` and step indices ``steps [...]`` -> features ``[..., 2*O + 4]``."""
        o = obs.clamp(-10, 10)
        t = (steps.to(obs.dtype) / 100.0).unsqueeze(-1)
        return torch.cat([o, o * o, t, t * t, t * t * t, torch.ones_like(t)], -1)

    def fit(self, obs: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
        """Per-task weights ``[T, F]`` from ``obs [T, E, H, O]``, ``mask``/``targets [T, E, H]``."""
        if obs.dim() != 4 or obs.shape[:3] != mask.shape or mask.shape != targets.shape:
            raise ValueError(
                f"expected obs [T, E, H, O] and mask, targets [T, E, H], got obs "
                f"{list(obs.shape)}, mask {list(mask.shape)}, targets {list(targets.shape)}"
            )
        steps = torch.arange(obs.shape[2], device=obs.device).expand(mask.shape)
        x = (self.features(obs, steps) * mask.unsqueeze(-1)).flatten(1, 2).double()  # [T, N, F]
        y = (targets * mask).flatten(1, 2).double()
        xtx = x.mT @ x
        xty = (x.mT @ y.unsqueeze(-1)).squeeze(-1)
        eye = torch.eye(xtx.shape[-1], dtype=xtx.dtype, device=xtx.device)
        reg = self.reg
        for _ in range(5):
            w = torch.linalg.solve(xtx + reg * eye, xty)
            if bool(torch.isfinite(w).all()):
                break
            reg *= 10
        return w.to(obs.dtype)

    def predict(self, weights: Tensor, obs: Tensor, steps: Tensor) -> Tensor:
        """Values for ``obs [T, *B, O]`` at ``steps [T, *B]`` with per-task ``weights [T, F]``."""
        f = self.features(obs, steps)
        return (f.flatten(1, -2) @ weights.unsqueeze(-1)).view(steps.shape)


def compute_advantages(
    episodes: Episodes,
    config: ReturnsConfig = ReturnsConfig(),
    baseline: LinearFeatureBaseline | None = None,
) -> Tensor:
    """Advantages ``[T, E, H]`` for ``episodes``: linear baseline fitted per task, then GAE.

    ``config`` gives ``gamma`` and ``gae_lambda``; with ``gae_lambda = 1`` this is the MAML
    paper's ``return - baseline``. With ``normalize_advantages``, each task's advantages are
    shifted and scaled to mean 0 and std 1 over its valid steps.
    """
    baseline = baseline or LinearFeatureBaseline()
    gamma, lam = config.gamma, config.gae_lambda
    ep = episodes
    with torch.no_grad():
        steps = torch.arange(ep.horizon, device=ep.obs.device).expand(ep.mask.shape)
        rough = discounted_returns(ep.rewards, ep.mask, gamma)
        weights = baseline.fit(ep.obs, ep.mask, rough)
        values = baseline.predict(weights, ep.obs, steps)
        last_value = baseline.predict(weights, ep.last_obs, ep.lengths)
        adv = gae(ep.rewards, values, ep.mask, ep.terminated, ep.truncated, last_value, gamma, lam)
        if config.normalize_advantages:
            adv = normalize_per_task(adv, ep.mask)
    return adv


def normalize_per_task(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """Shift and scale ``x [T, E, H]`` to mean 0, std 1 over each task's valid steps."""
    count = mask.sum((1, 2), keepdim=True).clamp_min(1)
    mean = (x * mask).sum((1, 2), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum((1, 2), keepdim=True) / count
    return (x - mean) / (var.sqrt() + eps) * mask
