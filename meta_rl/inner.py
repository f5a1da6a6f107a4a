"""The inner loop: ``K`` policy-gradient steps from the meta-parameters, for all tasks at once.

An :class:`InnerRule` says how one task's parameters step,

    theta'_t = theta_t - lr (.) grad L_t(theta_t),   L_t = -mean_valid[log pi(a|s) * A],

with ``lr`` a fixed number (:class:`FixedStep`: MAML, Reptile) or a learned rate per parameter
element (:class:`LearnedRates`: Meta-SGD). A rule may learn tensors of its own; they join the
policy's parameters in one dict of *meta-parameters*, under keys of the rule's.

:func:`adapt` serves training and evaluation alike. Each step samples fresh episodes with the
current per-task parameters, fits the baseline and steps every task ``t`` in one backward pass:
the per-task parameters are a ``[T, ...]`` expansion of the meta-parameters and the tasks' losses
are independent, so the gradient of their sum with respect to the expanded parameters is each
task's own gradient. :func:`replay` repeats those steps on the same episodes from other
meta-parameters (what the meta-objective differentiates). With ``first_order=False`` the steps
stay differentiable (``create_graph``), so the meta-gradient flows through them; the sampling
distribution itself is not differentiated, as in the MAML paper.

Step sizes of later steps. Step ``k`` of ``K`` (counting from 1) takes ``lr * s_k`` with
``s_1 = 1`` and ``s_k = later_lr_scale * later_lr_decay ** (k - 2)`` for ``k >= 2``
(:func:`step_scales`); training uses ``s_k = 1``, and evaluation the run's ``eval`` settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from meta_rl.config import ReturnsConfig
from meta_rl.episodes import Episodes
from meta_rl.policies import Dist, Params, Policy, batch_params
from meta_rl.returns import compute_advantages
from meta_rl.sampling import Sampler


class Adaptation(NamedTuple):
    """Result of :func:`adapt`.

    - ``params``: adapted per-task policy parameters ``[T, ...]`` (differentiable w.r.t. the
      meta-parameters unless the steps were first-order);
    - ``episodes[k]``, ``advantages[k]``: the data of inner step ``k`` (``[T, E, H, ...]``),
      sampled with the parameters before that step.
    """

    params: Params
    episodes: list[Episodes]
    advantages: list[Tensor]


# -- inner rules -----------------------------------------------------------------------------------


class InnerRule:
    """How a task's parameters take one policy-gradient step: ``theta - lr (.) grad``.

    ``first_order`` drops the second-order terms of meta-gradients through the step (it decides
    ``create_graph``). Subclasses give :meth:`step_sizes`; a rule that learns tensors of its own
    returns them from :meth:`init` (they become meta-parameters) and reports them in
    :meth:`metrics`.
    """

    first_order: bool = False
    max_kl: float | None = None
    """bound each task's step to this KL from the policy before it (None: the plain step)"""

    def init(self, params: Params) -> Params:
        """The rule's own meta-parameters for policy parameters ``params`` (none by default)."""
        return {}

    def step_sizes(self, meta: Params) -> float | Params:
        """The step size: one number, or a tensor per policy parameter, from ``meta``."""
        raise NotImplementedError

    def metrics(self, meta: Params) -> dict[str, float]:
        """Diagnostics of the rule's own meta-parameters, logged every iteration."""
        return {}


@dataclass(frozen=True)
class FixedStep(InnerRule):
    """MAML's (and Reptile's) rule: the same fixed step size ``lr`` for every parameter; with
    ``max_kl``, each task's step is shrunk to move its policy at most that far (in KL)."""

    lr: float
    first_order: bool = False
    max_kl: float | None = None

    def step_sizes(self, meta: Params) -> float:
        return self.lr


@dataclass(frozen=True)
class LearnedRates(InnerRule):
    """Meta-SGD's rule: a step size for every parameter element, learned with the policy.

    The rates are meta-parameters under the keys ``lr/<parameter name>``, each starting at
    ``init_lr``; the outer step moves them like any other meta-parameter. Nothing keeps them
    positive (Meta-SGD allows a rate to change sign).
    """

    init_lr: float
    first_order: bool = False
    max_kl: float | None = None
    prefix = "lr/"

    def init(self, params: Params) -> Params:
        return {self.prefix + k: torch.full_like(v, self.init_lr) for k, v in params.items()}

    def step_sizes(self, meta: Params) -> Params:
        n = len(self.prefix)
        return {k[n:]: v for k, v in meta.items() if k.startswith(self.prefix)}

    def owns(self, key: str) -> bool:
        """Whether meta-parameter ``key`` is one of the rates."""
        return key.startswith(self.prefix)

    def metrics(self, meta: Params) -> dict[str, float]:
        rates = torch.cat([v.detach().reshape(-1) for v in self.step_sizes(meta).values()])
        return {"lr_mean": float(rates.mean()), "lr_std": float(rates.std()),
                "lr_min": float(rates.min()), "lr_max": float(rates.max())}


# -- one step --------------------------------------------------------------------------------------


def inner_loss(policy: Policy, params: Params, episodes: Episodes, advantages: Tensor) -> Tensor:
    """Per-task REINFORCE loss ``[T]``: minus the mean over valid steps of ``log pi * A``."""
    d = policy.dist(params, episodes.obs, episodes.mask)
    logp = policy.log_prob(d, episodes.actions)
    mask = episodes.mask
    return -(logp * advantages * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def inner_step(policy: Policy, params: Params, episodes: Episodes, advantages: Tensor,
               lr: float | Params, first_order: bool,
               max_kl: float | Tensor | None = None) -> Params:
    """One policy-gradient step for every task: ``[T, ...]`` params in, ``[T, ...]`` out.

    With ``max_kl`` (a number, or one per task ``[T]``) each task's step is shrunk, where it
    would move the policy further, to a KL of ``max_kl`` from the policy before it
    (:func:`kl_bound_scale`); differentiably, so a meta-gradient flows through the bound too.
    """
    detached = not any(p.requires_grad for p in params.values())  # evaluation: no meta-graph
    with torch.enable_grad():
        if detached:
            params = {k: v.detach().requires_grad_() for k, v in params.items()}
        names = [k for k, p in params.items() if p.requires_grad]
        loss = inner_loss(policy, params, episodes, advantages).sum()
        grads = torch.autograd.grad(
            loss, [params[k] for k in names], create_graph=not first_order, allow_unused=True
        )
        steps = {k: lr[k] * g if isinstance(lr, dict) else lr * g
                 for k, g in zip(names, grads) if g is not None}
        if max_kl is not None:
            base = detach(params) if detached else params
            scale = kl_bound_scale(policy, base, steps, episodes, max_kl)
            steps = {k: v * scale.view(-1, *[1] * (v.dim() - 1)) for k, v in steps.items()}
    new = dict(params)
    for k, step in steps.items():
        new[k] = params[k] - step
    return detach(new) if detached else new


def step_kl(policy: Policy, params: Params, step: Params, episodes: Episodes) -> Tensor:
    """``0.5 * step^T F step`` per task ``[T]``: the KL between the policy at ``params`` and at
    ``params - step``, to second order, averaged over each task's states in ``episodes`` (``F``
    the Fisher of the policy's distribution, applied in closed form to the change of its outputs
    along ``step``, which one forward-mode pass gives)."""
    mask = episodes.mask
    weights = mask / mask.sum((1, 2), keepdim=True).clamp_min(1)
    names = list(step)

    def outputs(*values):
        d = policy.dist({**params, **dict(zip(names, values))}, episodes.obs, mask)
        return tuple(t for t in d if t is not None)

    # (contiguous: per-task parameters may be expanded views, which forward mode cannot use)
    out, tangent = torch.func.jvp(outputs, tuple(params[k].contiguous() for k in names),
                                  tuple(step[k].contiguous() for k in names))
    d = Dist(out[0], out[1] if len(out) > 1 else None)
    dd = Dist(tangent[0], tangent[1] if len(tangent) > 1 else None)
    fisher = policy.fisher_product(d, dd, weights)
    q = (dd.loc * fisher.loc).flatten(1).sum(1)
    if dd.log_std is not None:
        q = q + (dd.log_std * fisher.log_std).reshape(q.shape[0], -1).sum(1)
    return 0.5 * q


@torch.no_grad()
def mean_kl(policy: Policy, before: Params, after: Params, episodes: Episodes) -> Tensor:
    """``KL(before || after)`` per task ``[T]``, averaged over each task's states."""
    mask = episodes.mask
    kl = policy.kl(policy.dist(before, episodes.obs, mask), policy.dist(after, episodes.obs, mask))
    return (kl * mask).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)


def kl_bound_scale(policy: Policy, params: Params, step: Params, episodes: Episodes,
                   max_kl: float | Tensor) -> Tensor:
    """The factor ``[T]`` in ``(0, 1]`` that brings each task's step within ``max_kl``:
    ``min(1, sqrt(max_kl / step_kl))``."""
    kl = step_kl(policy, params, step, episodes)
    return torch.clamp(torch.sqrt(max_kl / kl.clamp_min(1e-12)), max=1.0)


# -- K steps ---------------------------------------------------------------------------------------


def adapt(
    policy: Policy,
    rule: InnerRule,
    meta: Params,
    tasks: list,
    sampler: Sampler,
    steps: int,
    seed: int,
    returns: ReturnsConfig = ReturnsConfig(),
    scales: list[float] | None = None,
    differentiable: bool = False,
    on_step: Callable[[int, Episodes], None] | None = None,
    keep: bool = True,
    rows: tuple[int, int] | None = None,
    later_kl: float | None = None,
    later_from: int = 1,
) -> Adaptation:
    """``steps`` inner steps of ``rule`` from the meta-parameters ``meta``, for each of ``tasks``.

    Step ``k`` (from 0) samples its episodes with seed ``seed + k`` and takes the step size times
    ``scales[k]`` (default 1; :func:`step_scales`). With ``differentiable`` the adapted
    parameters keep their graph to ``meta`` (unless ``rule.first_order``); otherwise nothing is
    differentiated through. ``on_step(k, episodes)`` is called after step ``k`` (from 1) with the
    episodes it adapted on; with ``keep=False`` those are not kept (memory stays that of one
    step, however many there are). Returns the adapted per-task parameters and the data of every
    step kept. ``rows`` places ``tasks`` in a larger batch (a rank's slice; ``Sampler.sample``).

    ``later_kl``: every step after the first ``later_from`` is bounded (:func:`inner_step`'s
    ``max_kl``) so that it moves each task's policy no further, in KL, than ``later_kl`` times
    that task's own first step did: later steps cannot blow up where a sharpened policy makes
    the same step size enormous. The rule's own ``max_kl`` bounds every step.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"inner steps must be an integer >= 0, got {steps!r}")
    scales = [1.0] * steps if scales is None else list(scales)
    if len(scales) < steps:
        raise ValueError(f"{steps} inner steps need {steps} step scales, got {scales}")
    first_order = rule.first_order or not differentiable
    source = meta if differentiable else detach(meta)
    params = batch_params(policy_params(policy, source), len(tasks))
    lr = rule.step_sizes(source)
    episodes, advantages = [], []
    first_kl = None  # [T]: how far each task's first step moved its policy
    with torch.set_grad_enabled(differentiable):
        for k in range(steps):
            ep = sampler.sample(tasks, detach(params), seed + k, rows)
            adv = compute_advantages(ep, returns)
            bound = rule.max_kl
            if later_kl is not None and k >= later_from:
                relative = later_kl * first_kl
                bound = relative if bound is None else relative.clamp(max=bound)
            before = params
            params = inner_step(policy, params, ep, adv, scale_lr(lr, scales[k]), first_order,
                                bound)
            if k == 0 and later_kl is not None:
                first_kl = mean_kl(policy, detach(before), detach(params), ep)
            if keep:
                episodes.append(ep)
                advantages.append(adv)
            if on_step is not None:
                on_step(k + 1, ep)
    return Adaptation(params, episodes, advantages)


def replay(policy: Policy, rule: InnerRule, meta: Params, episodes: list[Episodes],
           advantages: list[Tensor], first_order: bool | None = None,
           num_tasks: int | None = None) -> Params:
    """The steps of :func:`adapt` (unscaled) taken again from ``meta`` on the same ``episodes``
    and ``advantages``: the adapted per-task parameters as a function of the meta-parameters.

    ``first_order`` defaults to the rule's. With no episodes (``K = 0``) the result is the
    policy's parameters expanded to ``num_tasks`` tasks.
    """
    first_order = rule.first_order if first_order is None else first_order
    if num_tasks is None:
        if not episodes:
            raise ValueError("replay with no episodes needs num_tasks")
        num_tasks = episodes[0].num_tasks
    params = batch_params(policy_params(policy, meta), num_tasks)
    lr = rule.step_sizes(meta)
    for ep, adv in zip(episodes, advantages, strict=True):
        params = inner_step(policy, params, ep, adv, lr, first_order, rule.max_kl)
    return params


# -- helpers ---------------------------------------------------------------------------------------


def policy_params(policy: Policy, meta: Params) -> Params:
    """The policy's own parameters among the meta-parameters ``meta`` (in the policy's order)."""
    return {k: meta[k] for k in policy.param_names}


def check_lr_scale(value, name: str = "later_lr_scale") -> float:
    """``value`` as a float in (0, inf), or a ``ValueError`` that names it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0 < value < math.inf
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r} (1 keeps the step "
                         "size; the MAML paper's evaluation halves it after the first step: "
                         "later_lr_scale 0.5)")
    return float(value)


def step_scales(steps: int, later_lr_scale: float = 1.0,
                later_lr_decay: float = 1.0) -> list[float]:
    """The step size of each of ``steps`` steps relative to the first: step ``k`` (from 1) gets
    ``1`` for ``k = 1`` and ``later_lr_scale * later_lr_decay ** (k - 2)`` after it."""
    s = check_lr_scale(later_lr_scale)
    d = check_lr_scale(later_lr_decay, "later_lr_decay")
    return [1.0 if k == 1 else s * d ** (k - 2) for k in range(1, steps + 1)]


def scale_lr(lr: float | Params, scale: float) -> float | Params:
    """``scale * lr`` for a number or a dict of per-element rates."""
    if scale == 1.0:
        return lr
    if isinstance(lr, dict):
        return {k: v * scale for k, v in lr.items()}
    return lr * scale


def detach(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}
