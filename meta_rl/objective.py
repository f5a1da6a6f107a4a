"""The meta-objective: the post-adaptation surrogate of a meta-batch, as a function of the
meta-parameters, with the curvature products TRPO needs.

A :class:`MetaBatch` is fixed data: the episodes the inner loop adapted on and the validation
episodes the adapted policies then sampled, with their advantages. From meta-parameters ``meta``
the inner steps are replayed on it (:func:`~meta_rl.inner.replay`) and the surrogate

    L(meta) = -mean_t mean_valid[ pi_adapted(a|s) / pi_old(a|s) * A ]

is taken on the validation data, ``pi_old`` the policy that sampled it. Its gradient at the
meta-parameters that sampled the data is the MAML meta-gradient (Meta-SGD's, when the rule has
learned rates). :func:`meta_objective` is that function; :class:`MetaObjective` keeps its graph
for the outer steps (the gradient, TRPO's line search and curvature products).

Curvature products. At the old meta-parameters the KL's gradient w.r.t. the adapted parameters is
zero, so its Hessian w.r.t. the meta-parameters is exactly ``J^T F J``: ``J`` the Jacobian of the
map meta-parameters -> policy outputs on the validation states (through the inner loop), ``F`` the
closed-form Fisher of the adapted policy's distribution. ``J^T u`` is built once per iteration
with ``create_graph`` (a "linearisation" that every CG iteration reuses), ``J v`` comes from
differentiating that linear map w.r.t. ``u``, and ``F`` is applied analytically; ``J^T (F J v)``
is one reverse pass over the graph of the adapted policy's outputs, built once per iteration and
shared with the meta-gradient. (Forward-mode ``J v`` measured no faster here, and
``torch.func.linearize`` costs about a second of tracing per iteration: docs/benchmarks.md.)

Products can use a subsample of the states (``fisher_fraction``): ``J`` and ``F`` are then
estimated on evenly spaced time steps of every episode (:func:`step_index`), of the inner-loop
data and of the validation data alike, but *at the exact adapted parameters*: the replay on the
subsample only supplies the derivative (``adapted + (sub - sub.detach())``), so ``F`` is the
Fisher of the policy that sampled the validation episodes. The estimate stays positive
semi-definite, and each product costs about ``fisher_fraction`` of a full one. Steps are spread
over all episodes rather than taking whole episodes: states along one episode are correlated.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from meta_rl.distributed import SINGLE, Shard
from meta_rl.episodes import Episodes
from meta_rl.inner import InnerRule, detach, replay
from meta_rl.policies import Dist, Params, Policy


class MetaBatch(NamedTuple):
    """The fixed data of one meta-batch, ``[T, E, H, ...]`` each.

    - ``episodes[k]``, ``advantages[k]``: what inner step ``k`` adapted on (``K`` entries);
    - ``valid``, ``valid_advantages``: the episodes the adapted policies sampled, and theirs.
    """

    episodes: list[Episodes]
    advantages: list[Tensor]
    valid: Episodes
    valid_advantages: Tensor

    def subsample(self, fraction: float) -> MetaBatch:
        """The inner-loop data restricted to :func:`step_index` of every episode (what the
        replay needs on a ``fraction`` of the states); ``valid`` unchanged."""
        episodes, advantages = [], []
        for ep, adv in zip(self.episodes, self.advantages):
            index = step_index(ep.horizon, fraction)
            if index is None:
                episodes.append(ep)
                advantages.append(adv)
            else:
                episodes.append(subsample_steps(ep, index))
                advantages.append(adv.index_select(2, index.to(adv.device)))
        return self._replace(episodes=episodes, advantages=advantages)


class MetaObjective:
    """The surrogate and mean KL of one meta-batch as functions of the meta-parameters.

    ``meta``: the meta-parameters (a dict of leaf tensors; those that require grad are
    differentiated). ``adapted``: the per-task adapted parameters with their graph to ``meta``
    (default: replayed from ``meta``). ``old_log_prob``: log-probabilities of the validation
    actions under the policy that sampled them (default: the adapted policy itself, where the
    ratio is 1 and the surrogate's gradient is the policy gradient).

    The adapted policy's outputs on all validation states are computed once, with their graph
    to ``meta``; :meth:`surrogate`, :meth:`gradient` and the full-data curvature products reuse
    them. :meth:`gradient` is computed once, for every meta-parameter together.

    With a distributed ``shard`` the batch is one rank's slice of ``num_tasks`` tasks: each task
    weighs ``1 / num_tasks``, and the gradient, the curvature products and :meth:`at` are
    all-reduced, so every rank sees the whole meta-batch's values (:meth:`surrogate` stays this
    rank's part).
    """

    def __init__(self, policy: Policy, rule: InnerRule, meta: Params, batch: MetaBatch,
                 adapted: Params | None = None, old_log_prob: Tensor | None = None,
                 shard: Shard = SINGLE, num_tasks: int | None = None):
        self.policy, self.rule, self.meta, self.batch = policy, rule, meta, batch
        self.adapted = self.replay(meta, graph=True) if adapted is None else adapted
        # one rank's slice of a meta-batch of num_tasks: its sums are all-reduced
        self.shard = shard
        self.num_tasks = batch.valid.num_tasks if num_tasks is None else num_tasks
        self.weights = state_weights(batch.valid.mask, self.num_tasks)
        self._old_log_prob = old_log_prob
        self._gradient: tuple[Tensor, Params] | None = None

    # -- the adapted policy on the validation data ---------------------------------------------
    @functools.cached_property
    def dist(self) -> Dist:
        """The adapted policy's outputs on the validation states, with their graph to meta
        (built with grad enabled even when first asked for inside ``no_grad``)."""
        with torch.enable_grad():
            return self.policy.dist(self.adapted, self.batch.valid.obs, self.batch.valid.mask)

    @functools.cached_property
    def old(self) -> Dist:
        return Dist(*(None if t is None else t.detach() for t in self.dist))

    @functools.cached_property
    def old_log_prob(self) -> Tensor:
        if self._old_log_prob is not None:
            return self._old_log_prob
        with torch.no_grad():
            return self.policy.log_prob(self.old, self.batch.valid.actions)

    def replay(self, values: Params, fraction: float | None = None, graph: bool = False) -> Params:
        """The adapted parameters from meta-parameters ``values`` (any missing key keeps its
        current value, without a graph), on all inner-loop states or on a ``fraction`` of them;
        differentiable w.r.t. ``values`` when ``graph`` (and the rule is not first-order)."""
        merged = {k: values[k] if k in values else v.detach() for k, v in self.meta.items()}
        batch = self.batch if fraction is None else self.batch.subsample(fraction)
        return replay(self.policy, self.rule, merged, batch.episodes, batch.advantages,
                      self.rule.first_order or not graph, num_tasks=batch.valid.num_tasks)

    # -- surrogate and KL ------------------------------------------------------------------------
    def loss_kl(self, params: Params) -> tuple[Tensor, Tensor]:
        """Surrogate and mean KL (from the sampling policy) of adapted parameters ``params``."""
        valid = self.batch.valid
        return self._loss_kl(self.policy.dist(params, valid.obs, valid.mask))

    def _loss_kl(self, d: Dist) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(self.policy.log_prob(d, self.batch.valid.actions) - self.old_log_prob)
        loss = -(ratio * self.batch.valid_advantages * self.weights).sum()
        kl = (self.policy.kl(self.old, d) * self.weights).sum()
        return loss, kl

    def surrogate(self) -> Tensor:
        """The surrogate at the adapted parameters, differentiable w.r.t. ``meta``."""
        return self._loss_kl(self.dist)[0]

    def gradient(self, retain_graph: bool = False) -> tuple[Tensor, Params]:
        """The surrogate and its gradient w.r.t. every meta-parameter that requires grad, from
        one backward pass (computed on the first call; later calls return it).
        ``retain_graph`` keeps the graph for curvature products on all states."""
        if self._gradient is None:
            loss = self.surrogate()
            keys = [k for k, v in self.meta.items() if v.requires_grad]
            grads = torch.autograd.grad(loss, [self.meta[k] for k in keys],
                                        retain_graph=retain_graph)
            if self.shard.distributed:  # one all-reduce of the flat gradient, and of the loss
                total = self.shard.all_reduce(torch.cat([flat(grads), loss.detach().view(1)]))
                grads, loss = unflat(total[:-1], list(grads)), total[-1]
            self._gradient = loss, dict(zip(keys, grads))
        return self._gradient

    def at(self, values: Params) -> tuple[float, float]:
        """Surrogate and KL after replaying from meta-parameters ``values`` (no outer graph)."""
        params = detach(self.replay(values))
        with torch.no_grad():
            loss, kl = self.loss_kl(params)
        if self.shard.distributed:
            loss, kl = self.shard.all_reduce(torch.stack([loss, kl]))
        return float(loss), float(kl)

    # -- curvature -----------------------------------------------------------------------------
    def uses_all_states(self, fraction: float) -> bool:
        """Whether curvature products at ``fisher_fraction`` ``fraction`` use every state (and
        with them the graph of :attr:`dist`)."""
        return step_index(self.batch.valid.horizon, fraction) is None

    def fisher_hvp(self, keys: list[str], fraction: float,
                   damping: float) -> Callable[[Tensor], Tensor]:
        """``v -> (J^T F J + damping I) v``, the mean KL's Hessian w.r.t. the meta-parameters
        ``keys`` (flattened in that order) at their current values.

        With ``fraction < 1`` both ``J`` (through the inner loop) and ``F`` are estimated on
        ``ceil(fraction * H)`` evenly spaced time steps of every episode; the estimate is taken
        at the exact adapted parameters (see the module docstring). With more than one inner
        step the Jacobians of the later steps are those of the subsample's own trajectory.
        """
        meta = [self.meta[k] for k in keys]
        index = step_index(self.batch.valid.horizon, fraction)
        if index is None:
            d, weights = self.dist, self.weights
        else:
            valid = subsample_steps(self.batch.valid, index)
            weights = state_weights(valid.mask, self.num_tasks)
            sub = self.replay(dict(zip(keys, meta)), fraction, graph=True)
            adapted = {k: self.adapted[k].detach() + (v - v.detach()) for k, v in sub.items()}
            d = self.policy.dist(adapted, valid.obs, valid.mask)
        outputs = [t for t in d if t is not None]
        old = Dist(*(None if t is None else t.detach() for t in d))
        dummies = [torch.zeros_like(t, requires_grad=True) for t in outputs]
        jtu = torch.autograd.grad(outputs, meta, dummies, create_graph=True,
                                  materialize_grads=True)

        def hvp(v: Tensor) -> Tensor:
            jv = torch.autograd.grad(jtu, dummies, unflat(v, meta), retain_graph=True)
            tangent = Dist(jv[0], jv[1] if len(jv) > 1 else None)
            fjv = [t for t in self.policy.fisher_product(old, tangent, weights) if t is not None]
            out = torch.autograd.grad(outputs, meta, fjv, retain_graph=True,
                                      materialize_grads=True)
            return self.shard.all_reduce(flat(out)) + damping * v

        return hvp


def meta_objective(policy: Policy, rule: InnerRule, meta: Params, batch: MetaBatch,
                   old_log_prob: Tensor | None = None) -> Tensor:
    """The post-adaptation surrogate of ``batch`` at meta-parameters ``meta``: the inner steps of
    ``rule`` replayed from ``meta`` on ``batch.episodes`` (differentiably, unless the rule is
    first-order), then ``-mean_t mean_valid[ratio * A]`` on the validation data. Its gradient
    w.r.t. ``meta`` is the meta-gradient. ``old_log_prob`` as in :class:`MetaObjective`."""
    return MetaObjective(policy, rule, meta, batch, old_log_prob=old_log_prob).surrogate()


# -- helpers ---------------------------------------------------------------------------------------


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vector[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


def state_weights(mask: Tensor, num_tasks: int | None = None) -> Tensor:
    """Weights ``[T, E, H]`` that make a weighted sum the mean over ``num_tasks`` (default
    ``T``) tasks of each task's mean over its valid states."""
    tasks = mask.shape[0] if num_tasks is None else num_tasks
    return mask / (mask.sum((1, 2), keepdim=True).clamp_min(1) * tasks)


def step_index(horizon: int, fraction: float) -> Tensor | None:
    """``ceil(fraction * horizon)`` evenly spaced time steps ``floor(i * horizon / n)``, or
    ``None`` when that is every step (a subsample for TRPO's curvature products)."""
    n = min(horizon, max(1, math.ceil(fraction * horizon)))
    if n == horizon:
        return None
    return torch.arange(n) * horizon // n


def subsample_steps(episodes: Episodes, index: Tensor) -> Episodes:
    """The steps ``index`` of every episode (``last_obs`` unchanged): enough to recompute a loss
    on them, not to recompute returns (the time structure is gone)."""
    index = index.to(episodes.obs.device)
    return Episodes(*(x.index_select(2, index) for x in episodes[:6]), episodes.last_obs,
                    episodes.success)
