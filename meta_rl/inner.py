"""The inner loop: ``K`` policy-gradient steps from the meta-parameters, for all tasks at once.

One function, :func:`adapt`, serves training and evaluation. Each step samples fresh episodes
with the current per-task parameters, fits the baseline, and takes a REINFORCE step

    theta'_t = theta_t - lr * grad L_t(theta_t),   L_t = -mean_valid[log pi(a|s) * A]

for every task ``t`` in one backward pass: the per-task parameters are a ``[T, ...]`` expansion of
the meta-parameters and the tasks' losses are independent, so the gradient of their sum with
respect to the expanded parameters is each task's own gradient (``torch.func`` evaluates the
batched policy; no per-task loop and no ``vmap`` of a gradient is needed).

``lr`` is a float (MAML, Reptile) or a dict of per-element rates shaped like the parameters
(Meta-SGD). With ``first_order=False`` the steps stay differentiable (``create_graph``), so the
meta-gradient flows through them; the sampling distribution itself is not differentiated, as in
the MAML paper.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from meta_rl.episodes import Episodes
from meta_rl.policies import Params, Policy, batch_params
from meta_rl.returns import compute_advantages
from meta_rl.sampling import Sampler


class ReturnsConfig(NamedTuple):
    """How advantages are computed from episodes."""

    gamma: float = 0.99
    gae_lambda: float = 1.0
    normalize: bool = True


class Adaptation(NamedTuple):
    """Result of :func:`adapt`.

    - ``params``: adapted per-task parameters ``[T, ...]`` (differentiable w.r.t. the
      meta-parameters unless ``first_order``);
    - ``episodes[k]``, ``advantages[k]``: the data of inner step ``k`` (``[T, E, H, ...]``),
      sampled with the parameters before that step.
    """

    params: Params
    episodes: list[Episodes]
    advantages: list[Tensor]


def inner_loss(policy: Policy, params: Params, episodes: Episodes, advantages: Tensor) -> Tensor:
    """Per-task REINFORCE loss ``[T]``: minus the mean over valid steps of ``log pi * A``."""
    d = policy.dist(params, episodes.obs, episodes.mask)
    logp = policy.log_prob(d, episodes.actions)
    mask = episodes.mask
    return -(logp * advantages * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def inner_step(
    policy: Policy,
    params: Params,
    episodes: Episodes,
    advantages: Tensor,
    lr: float | Params,
    first_order: bool,
) -> Params:
    """One policy-gradient step for every task: ``[T, ...]`` params in, ``[T, ...]`` out."""
    detached = not any(p.requires_grad for p in params.values())  # evaluation: no meta-graph
    with torch.enable_grad():
        if detached:
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
        names = [k for k, p in params.items() if p.requires_grad]
        loss = inner_loss(policy, params, episodes, advantages).sum()
        grads = torch.autograd.grad(
            loss, [params[k] for k in names], create_graph=not first_order, allow_unused=True
        )
    new = dict(params)
    for k, g in zip(names, grads):
        if g is None:
            continue
        step = lr[k] * g if isinstance(lr, dict) else lr * g
        new[k] = params[k] - step
    return detach(new) if detached else new


def adapt(
    policy: Policy,
    meta_params: Params,
    tasks: list,
    sampler: Sampler,
    steps: int,
    lr: float | Params,
    seed: int,
    first_order: bool = False,
    returns: ReturnsConfig = ReturnsConfig(),
    later_lr_scale: float = 1.0,
    later_lr_decay: float = 1.0,
) -> Adaptation:
    """``steps`` inner policy-gradient steps from ``meta_params`` for each of ``tasks``.

    Step ``k`` samples its episodes with seed ``seed + k``. The first step uses ``lr``; step
    ``k >= 1`` (counting from 0) uses ``lr * later_lr_scale * later_lr_decay ** (k - 1)``
    (:func:`step_scales`). The MAML paper evaluates with ``later_lr_scale`` 0.5: "halving the
    learning rate after the first gradient step". Returns the adapted per-task parameters and
    the data of every step.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"inner steps must be an int >= 0, got {steps!r}")
    scales = step_scales(steps, later_lr_scale, later_lr_decay)
    params = batch_params(meta_params, len(tasks))
    episodes, advantages = [], []
    for k in range(steps):
        ep = sampler.sample(tasks, {n: p.detach() for n, p in params.items()}, seed + k)
        adv = compute_advantages(ep, returns.gamma, returns.gae_lambda, returns.normalize)
        params = inner_step(policy, params, ep, adv, scale_lr(lr, scales[k]), first_order)
        episodes.append(ep)
        advantages.append(adv)
    return Adaptation(params, episodes, advantages)


def check_lr_scale(value, name: str = "later_lr_scale") -> float:
    """``value`` as a float in (0, inf), or a ``ValueError`` that names it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0 < value < math.inf
    ):
        hint = {"later_lr_scale": "1 keeps the step size; the MAML paper's evaluation uses 0.5",
                "later_lr_decay": "1 keeps every later step at later_lr_scale; 0.5 halves "
                                  "each one"}.get(name, "1 changes nothing")
        raise ValueError(f"{name} must be a number > 0, got {value!r} ({hint})")
    return float(value)


def step_scales(steps: int, later_lr_scale: float = 1.0,
                later_lr_decay: float = 1.0) -> list[float]:
    """The step size of each of ``steps`` inner steps relative to the first:
    ``[1, s, s*d, s*d**2, ..]`` for ``later_lr_scale`` s and ``later_lr_decay`` d."""
    s = check_lr_scale(later_lr_scale)
    d = check_lr_scale(later_lr_decay, "later_lr_decay")
    return [1.0 if k == 0 else s * d ** (k - 1) for k in range(steps)]


def scale_lr(lr: float | Params, scale: float) -> float | Params:
    """``scale * lr`` for a float or a dict of per-element rates."""
    if scale == 1.0:
        return lr
    if isinstance(lr, dict):
        return {k: v * scale for k, v in lr.items()}
    return lr * scale


def readapt(
    policy: Policy,
    meta_params: Params,
    adaptation: Adaptation,
    lr: float | Params,
    first_order: bool,
) -> Params:
    """Repeat :func:`adapt`'s updates from new ``meta_params`` on the same episodes.

    Used by TRPO's line search, which asks how a candidate meta-step changes the adapted policy
    without resampling.
    """
    if adaptation.episodes:
        num_tasks = adaptation.episodes[0].num_tasks
    else:
        num_tasks = next(iter(adaptation.params.values())).shape[0]
    params = batch_params(meta_params, num_tasks)
    for ep, adv in zip(adaptation.episodes, adaptation.advantages):
        params = inner_step(policy, params, ep, adv, lr, first_order)
    return params


def step_index(horizon: int, fraction: float) -> Tensor | None:
    """``ceil(fraction * horizon)`` evenly spaced time steps ``floor(i * horizon / n)``, or
    ``None`` when that is every step (a subsample for TRPO's curvature products)."""
    n = min(horizon, max(1, math.ceil(fraction * horizon)))
    if n == horizon:
        return None
    return torch.arange(n) * horizon // n


def subsample_steps(episodes: Episodes, index: Tensor) -> Episodes:
    """The steps ``index`` of every episode (``last_obs`` unchanged). Enough to recompute a
    loss on them; not to recompute returns (the time structure is gone)."""
    index = index.to(episodes.obs.device)
    return Episodes(*(x.index_select(2, index) for x in episodes[:6]), episodes.last_obs)


def subsample_adaptation(adaptation: Adaptation, fraction: float) -> Adaptation:
    """The same adaptation data restricted to :func:`step_index` of every episode: what
    :func:`readapt` needs to re-run the inner loop on a ``fraction`` of the states."""
    episodes, advantages = [], []
    for ep, adv in zip(adaptation.episodes, adaptation.advantages):
        index = step_index(ep.horizon, fraction)
        if index is None:
            episodes.append(ep)
            advantages.append(adv)
        else:
            episodes.append(subsample_steps(ep, index))
            advantages.append(adv.index_select(2, index.to(adv.device)))
    return Adaptation(adaptation.params, episodes, advantages)


def detach(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}
