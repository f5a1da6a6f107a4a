"""Policies whose parameters are data.

A policy module holds only the architecture and a fresh initialisation. Parameters travel as a
plain ``dict[str, Tensor]`` and are evaluated with ``torch.func.functional_call``. The same
parameters may carry a leading task dimension: with ``params["layers.0.weight"]`` of shape
``[T, out, in]`` the policy maps observations ``[T, ..., O]`` for all ``T`` tasks in one batched
matmul, which is how per-task adapted parameters are evaluated without a loop over tasks.

Two policies, chosen from the action space by :func:`make_policy`:

- :class:`GaussianMLPPolicy` for ``Box`` actions: an MLP gives the mean, a state-independent
  learned ``log_std`` gives the spread (the MAML paper's policy), both relative to the action box.
- :class:`CategoricalMLPPolicy` for ``Discrete`` actions: an MLP gives the logits.

Distribution parameters are returned as a :class:`Dist` so that log-probabilities, KLs and Fisher
products use closed forms.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.func import functional_call

from meta_rl.config import PolicyConfig

Params = dict[str, Tensor]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}
_LOG_2PI = math.log(2 * math.pi)


class Dist(NamedTuple):
    """Distribution parameters for a batch of states ``[T, *B]``.

    Gaussian: ``loc [T, *B, A]`` and ``log_std [T, A]`` (or ``[A]`` unbatched).
    Categorical: ``loc`` holds the logits ``[T, *B, n]`` and ``log_std`` is ``None``.
    """

    loc: Tensor
    log_std: Tensor | None


def _noise(draw, like: Tensor, generator, rows: tuple[int, int] | None, dtype=None) -> Tensor:
    """``draw`` (``torch.randn``/``torch.rand``) of ``like``'s shape, or, with
    ``rows=(offset, total)``, those rows of a draw for ``total`` rows (one rank's slice)."""
    dtype = like.dtype if dtype is None else dtype
    if rows is None or (rows[0] == 0 and rows[1] == like.shape[0]):
        return draw(like.shape, generator=generator, device=like.device, dtype=dtype)
    offset, total = rows
    full = draw((total, *like.shape[1:]), generator=generator, device=like.device, dtype=dtype)
    return full[offset:offset + like.shape[0]]


def _expand_log_std(log_std: Tensor, loc: Tensor) -> Tensor:
    """Broadcast ``log_std`` ``[T, A]`` (or ``[A]``) against ``loc`` ``[T, *B, A]``."""
    if log_std.dim() == 1:
        return log_std
    return log_std.view(log_std.shape[0], *([1] * (loc.dim() - 2)), log_std.shape[-1])


class MLPPolicy(nn.Module):
    """Shared MLP body; subclasses turn its output into a distribution."""

    def __init__(self, obs_dim: int, out_dim: int, hidden: tuple[int, ...], activation: str):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        if not hidden or any((not isinstance(h, int)) or h <= 0 for h in hidden):
            raise ValueError(f"hidden sizes must be positive ints, got {hidden!r}")
        sizes = (obs_dim, *hidden, out_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.obs_dim, self.hidden, self.activation = obs_dim, tuple(hidden), activation
        self._act = _ACTIVATIONS[activation]
        for layer in self.layers:  # the MAML/rllab init: Xavier-uniform weights, zero biases
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def param_names(self) -> list[str]:
        """The names of the policy's parameters, in order (the keys of its parameter dicts)."""
        return [name for name, _ in self.named_parameters()]

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    def init_params(self, generator: torch.Generator | None = None) -> Params:
        """A fresh parameter dict (leaf tensors). With ``generator``, reproducible."""
        params = {}
        for name, p in self.named_parameters():
            if name.endswith("weight") and generator is not None:
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                value = (torch.rand(p.shape, generator=generator) * 2 - 1) * bound
            else:
                value = p.detach().clone()
            params[name] = value.to(p.dtype)
        return params

    def body(self, obs: Tensor) -> Tensor:
        """MLP output. Batched weights ``[T, out, in]`` take ``obs [T, *B, O]``."""
        x = obs
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            w, b = layer.weight, layer.bias
            if w.dim() == 3:  # per-task parameters: one bmm for all tasks
                lead = x.shape[:-1]
                x = torch.baddbmm(b.unsqueeze(1), x.reshape(w.shape[0], -1, x.shape[-1]), w.mT)
                x = x.reshape(*lead, w.shape[1])
            else:
                x = torch.nn.functional.linear(x, w, b)
            if i < last:
                x = self._act(x)
        return x

    def dist(self, params: Params, obs: Tensor, mask: Tensor | None = None) -> Dist:
        """Distribution parameters of ``params`` at ``obs``.

        ``mask`` (``obs.shape[:-1]``, nonzero where a step happened) lets the MLP skip padding:
        where every task's steps fill at most half of its rows, the steps are packed per task,
        run through the MLP, and scattered back. Either way ``loc`` is the policy's output at
        every step that happened; at a masked-out step it is unspecified (0 or the output
        there), which is harmless because every loss weighs those steps by the mask. Why: a
        ``"steps"`` batch pads its tasks to the task with the most episodes, so one task whose
        episodes end in a step or two made the MLP's activations on the padding 4 GB per hidden
        layer for 40 Navigation2D tasks.
        """
        if mask is None or obs.dim() < 3:
            return functional_call(self, params, (obs,))
        num_tasks, width = obs.shape[0], obs.shape[-1]
        present = mask.reshape(num_tasks, -1) != 0  # [T, R] rows of all steps
        count = int(present.sum(1).max())  # one host sync
        if 2 * count > present.shape[1]:
            return functional_call(self, params, (obs,))
        # the positions of each task's steps first, in order (a stable sort of "is padding")
        # (as uint8: CUDA sorts no bool before torch 2.6)
        order = torch.sort((~present).to(torch.uint8), dim=1, stable=True).indices
        order = order[:, :max(count, 1)]
        flat = obs.reshape(num_tasks, -1, width)
        packed = torch.gather(flat, 1, order.unsqueeze(-1).expand(-1, -1, width))
        d = functional_call(self, params, (packed,))
        out = d.loc.shape[-1]
        loc = d.loc.new_zeros((num_tasks, present.shape[1], out)).scatter(
            1, order.unsqueeze(-1).expand(-1, -1, out), d.loc)
        return Dist(loc.reshape(*obs.shape[:-1], out), d.log_std)


class GaussianMLPPolicy(MLPPolicy):
    """Diagonal Gaussian with an MLP mean and a learned state-independent ``log_std``, relative
    to the action box.

    With a bounded action box ``[low, high]`` the Gaussian lives in the box's normalised
    coordinates: the mean is ``center + half_width * mlp(obs)`` and the spread is
    ``half_width * exp(log_std)``, so ``init_std=1`` means a spread of one half-width whatever
    the env's units (rllab's ``normalize`` wrapper, which the MAML paper's experiments used).
    Samples and log-probabilities are in env units. Samples outside the box are the env's to
    handle: Navigation2D clips them, and MuJoCo clamps controls to their range. Without
    bounds (``low``/``high`` omitted or infinite) the Gaussian is in env units.
    """

    discrete = False

    def __init__(self, obs_dim, act_dim, hidden=(100, 100), activation="relu", init_std=1.0,
                 low=None, high=None):
        super().__init__(obs_dim, act_dim, hidden, activation)
        if not init_std > 0:
            raise ValueError(f"init_std must be > 0, got {init_std!r}")
        self.act_dim = act_dim
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        center, half = torch.zeros(act_dim), torch.ones(act_dim)
        if low is not None and high is not None:
            low = torch.as_tensor(low, dtype=torch.float32).reshape(-1).expand(act_dim)
            high = torch.as_tensor(high, dtype=torch.float32).reshape(-1).expand(act_dim)
            bounded = torch.isfinite(low) & torch.isfinite(high) & (high > low)
            center = torch.where(bounded, (low + high) / 2, center)
            half = torch.where(bounded, (high - low) / 2, half)
        # buffers, not parameters: functional_call takes them from the module
        self.register_buffer("action_center", center, persistent=False)
        self.register_buffer("action_log_scale", half.log(), persistent=False)

    def forward(self, obs: Tensor) -> Dist:
        loc = torch.addcmul(self.action_center, self.action_log_scale.exp(), self.body(obs))
        return Dist(loc, self.log_std + self.action_log_scale)

    def sample(self, params: Params, obs: Tensor, generator: torch.Generator | None,
               rows: tuple[int, int] | None = None) -> Tensor:
        """Actions for ``obs [T, ...]``. With ``rows=(offset, total)`` the noise is rows
        ``offset..offset + T`` of the noise a batch of ``total`` tasks would draw."""
        loc, log_std = self.dist(params, obs)
        noise = _noise(torch.randn, loc, generator, rows)
        return loc + noise * _expand_log_std(log_std, loc).exp()

    @staticmethod
    def log_prob(d: Dist, actions: Tensor) -> Tensor:
        """``log pi(a|s)`` summed over action dims: ``[T, *B]``."""
        log_std = _expand_log_std(d.log_std, d.loc)
        z = (actions - d.loc) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * _LOG_2PI * d.loc.shape[-1]

    @staticmethod
    def kl(old: Dist, new: Dist) -> Tensor:
        """``KL(old || new)`` per state: ``[T, *B]``."""
        ls_old = _expand_log_std(old.log_std, old.loc)
        ls_new = _expand_log_std(new.log_std, new.loc)
        var_ratio = torch.exp(2 * (ls_old - ls_new))
        mean_term = (old.loc - new.loc).pow(2) * torch.exp(-2 * ls_new)
        return (0.5 * (var_ratio + mean_term - 1) - (ls_old - ls_new)).sum(-1)

    @staticmethod
    def entropy(d: Dist) -> Tensor:
        log_std = _expand_log_std(d.log_std, d.loc).expand_as(d.loc)
        return (log_std + 0.5 * (1 + _LOG_2PI)).sum(-1)

    @staticmethod
    def fisher_product(d: Dist, dd: Dist, weights: Tensor) -> Dist:
        """Fisher matrix of the KL at ``d`` applied to a tangent ``dd``, weighted per state.

        ``weights [T, *B]`` are the weights of each state's KL in the mean KL. For a diagonal
        Gaussian in (mean, log_std) the Fisher is ``diag(1/sigma^2)`` and ``2`` respectively.
        """
        log_std = _expand_log_std(d.log_std, d.loc)
        loc = dd.loc * torch.exp(-2 * log_std) * weights.unsqueeze(-1)
        if d.log_std.dim() == 1:
            scale = weights.sum()
        else:
            scale = weights.reshape(weights.shape[0], -1).sum(1, keepdim=True)
        return Dist(loc, 2.0 * dd.log_std * scale)


class CategoricalMLPPolicy(MLPPolicy):
    """Categorical over ``n`` actions with MLP logits."""

    discrete = True

    def __init__(self, obs_dim, n_actions, hidden=(100, 100), activation="relu"):
        super().__init__(obs_dim, n_actions, hidden, activation)
        self.n_actions = n_actions

    def forward(self, obs: Tensor) -> Dist:
        return Dist(torch.log_softmax(self.body(obs), -1), None)

    def sample(self, params: Params, obs: Tensor, generator: torch.Generator | None,
               rows: tuple[int, int] | None = None) -> Tensor:
        """Actions for ``obs [T, ...]``, the noise as :meth:`GaussianMLPPolicy.sample`'s."""
        logits = self.dist(params, obs).loc
        u = _noise(torch.rand, logits, generator, rows, dtype=torch.float32)
        return torch.argmax(logits - torch.log(-torch.log(u.clamp_min(1e-20))), -1)  # Gumbel-max

    @staticmethod
    def log_prob(d: Dist, actions: Tensor) -> Tensor:
        return d.loc.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    @staticmethod
    def kl(old: Dist, new: Dist) -> Tensor:
        return (old.loc.exp() * (old.loc - new.loc)).sum(-1)

    @staticmethod
    def entropy(d: Dist) -> Tensor:
        return -(d.loc.exp() * d.loc).sum(-1)

    @staticmethod
    def fisher_product(d: Dist, dd: Dist, weights: Tensor) -> Dist:
        """Fisher of the KL applied to a log-probability tangent ``dd``, weighted per state.

        ``loc`` holds log-probabilities, and any tangent of a log-softmax output has
        ``sum(p * dl) = 0``; on such tangents the KL's Hessian is ``diag(p)`` (in logit space
        it is the familiar ``diag(p) - p p^T``).
        """
        return Dist(d.loc.exp() * dd.loc * weights.unsqueeze(-1), None)


Policy = GaussianMLPPolicy | CategoricalMLPPolicy


def make_policy(
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    config: PolicyConfig = PolicyConfig(),
    dtype: torch.dtype | None = None,
) -> Policy:
    """The policy that fits ``action_space`` (Gaussian for ``Box``, categorical for
    ``Discrete``), with ``config``'s architecture, its parameters and buffers in ``dtype``
    (default: ``config.dtype``)."""
    dtype = getattr(torch, config.dtype) if dtype is None else dtype
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"observations must be a flat Box, got {observation_space!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    obs_dim = observation_space.shape[0]
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        policy = GaussianMLPPolicy(
            obs_dim, action_space.shape[0], config.hidden, config.activation, config.init_std,
            action_space.low, action_space.high,
        )
    elif isinstance(action_space, gym.spaces.Discrete):
        policy = CategoricalMLPPolicy(obs_dim, int(action_space.n), config.hidden,
                                      config.activation)
    else:
        raise ValueError(f"action space must be a flat Box or Discrete, got {action_space!r}")
    return policy.to(dtype)


def batch_params(params: Params, num_tasks: int) -> Params:
    """Give every parameter a leading task dimension ``[T, ...]`` (a view, no copy)."""
    return {k: v.unsqueeze(0).expand(num_tasks, *v.shape) for k, v in params.items()}
