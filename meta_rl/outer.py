"""Outer optimisers for gradient-based meta-learners (MAML, Meta-SGD).

Both work on a :class:`MetaObjective`: the post-adaptation surrogate loss and mean KL as functions
of the meta-parameters (the initial policy parameters, plus Meta-SGD's learning rates).

- :class:`AdamOuter`: one Adam step on the surrogate's meta-gradient.
- :class:`TRPOOuter`: the MAML paper's outer step. Conjugate gradient solves ``H x = g`` with
  ``H`` the Hessian of the mean KL through the inner loop, then a backtracking line search keeps
  the mean KL within ``max_kl`` and requires the surrogate to improve.

Curvature products. At the old meta-parameters the KL's gradient w.r.t. the adapted parameters is
zero, so its Hessian w.r.t. the meta-parameters is exactly ``J^T F J``: ``J`` the Jacobian of the
map meta-parameters -> policy outputs on the validation states (through the inner loop), ``F`` the
closed-form Fisher of the adapted policy's distribution. We build ``J^T u`` once per iteration
with ``create_graph`` (a "linearisation" that every CG iteration reuses), obtain ``J v`` by
differentiating that linear map w.r.t. ``u``, and apply ``F`` analytically; ``J^T (F J v)`` is one
reverse pass over the graph of the adapted policy's outputs, built once per iteration and shared
with the meta-gradient. (Forward-mode ``J v`` -- ``torch.func.jvp`` through a functional inner
step, or ``torch.func.linearize`` -- does the same matrix products and measured no faster here;
``linearize`` also costs about a second of tracing per iteration: see ``docs/benchmarks.md``.)

Products can use a subsample of the states (``fisher_fraction``): ``J`` and ``F`` are then
estimated on evenly spaced time steps of every episode (:func:`~meta_rl.inner.step_index`), of
the inner-loop data and of the validation data alike, but *at the exact adapted parameters*: the
re-adaptation on the subsample only supplies the derivative (``adapted + (sub - sub.detach())``),
so ``F`` is the Fisher of the policy that sampled the validation episodes. The estimate
``J_s^T F_s J_s`` stays positive semi-definite, and each product costs about ``fisher_fraction``
of a full one. Steps spread over all episodes rather than whole episodes: states along one
episode are correlated, and measured on Navigation2D the first fifth of the episodes slowed
learning where every fifth step did not (``docs/benchmarks.md``). The line search always checks
the exact KL on all states. ``s^T H s`` for the step size comes from CG's own residual
(``H x = b - r``), not from an extra product.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from meta_rl.inner import step_index, subsample_steps
from meta_rl.policies import Dist


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite."""


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflat(vector: Tensor, like: list[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        out.append(vector[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


def cg_solve(
    avp: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int,
    x0: Tensor | None = None,
    tol: float = 1e-10,
) -> tuple[Tensor, Tensor]:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given ``A v``, by
    conjugate gradients; starts from ``x0`` when given (warm start). Returns ``x`` and the
    residual ``r = b - A x`` itself.

    ``r`` is CG's recursively updated residual, so ``A x = b - r`` comes without another
    product (exact in exact arithmetic). ``iters`` products, plus one for a warm start.
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - avp(x)
    p = r.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        if rr <= tol:
            break
        ap = avp(p)
        alpha = rr / torch.dot(p, ap)
        x += alpha * p
        r -= alpha * ap
        rr_new = torch.dot(r, r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, r


def state_weights(mask: Tensor) -> Tensor:
    """Weights ``[T, E, H]`` that make a weighted sum the mean over tasks of each task's mean
    over its valid states."""
    return mask / (mask.sum((1, 2), keepdim=True).clamp_min(1) * mask.shape[0])


class MetaObjective:
    """Post-adaptation surrogate and KL of one meta-batch, as functions of the meta-parameters.

    ``adapted``: per-task adapted parameters with their graph to ``meta`` (the list of
    meta-parameter tensors); ``readapt(meta_values, fraction, graph)`` recomputes them from the
    inner-loop data (restricted to :func:`~meta_rl.inner.subsample_adaptation`'s ``fraction`` of
    the states unless ``fraction`` is ``None``), with a graph to ``meta_values`` when ``graph``.
    ``valid``/``valid_adv``: episodes sampled with the adapted policy and their advantages.
    The surrogate is ``-mean_t mean_valid[ratio * A]``, the ratio taken against the adapted
    policy that sampled ``valid``.

    The policy's outputs on all validation states are computed once, with their graph to
    ``meta``; :meth:`surrogate`, its gradient and the full-data curvature products all reuse it.

    ``extra``: tensors outside ``meta`` that the adapted parameters also depend on (Meta-SGD's
    rates when they have an optimiser of their own); :meth:`gradient` leaves the surrogate's
    gradient w.r.t. them in :attr:`extra_grads`, from the same backward pass.
    """

    def __init__(self, policy, meta: list[Tensor], adapted, readapt, valid, valid_adv,
                 extra: list[Tensor] = ()):
        self.policy, self.meta, self.adapted, self.readapt = policy, meta, adapted, readapt
        self.valid, self.adv = valid, valid_adv
        self.extra, self.extra_grads = list(extra), None
        self.weights = state_weights(valid.mask)
        # with its graph to meta (when it has one)
        self.dist = policy.dist(adapted, valid.obs, valid.mask)
        self.old = Dist(*(None if t is None else t.detach() for t in self.dist))
        with torch.no_grad():
            self.old_logp = policy.log_prob(self.old, valid.actions)

    def loss_kl(self, params) -> tuple[Tensor, Tensor]:
        return self._loss_kl(self.policy.dist(params, self.valid.obs, self.valid.mask))

    def _loss_kl(self, d: Dist) -> tuple[Tensor, Tensor]:
        ratio = torch.exp(self.policy.log_prob(d, self.valid.actions) - self.old_logp)
        loss = -(ratio * self.adv * self.weights).sum()
        kl = (self.policy.kl(self.old, d) * self.weights).sum()
        return loss, kl

    def surrogate(self) -> Tensor:
        """The surrogate at the adapted parameters, differentiable w.r.t. ``meta``.

        Equals ``loss_kl(adapted)[0]`` without another forward pass. Differentiate it with
        ``retain_graph=True`` to compute curvature products afterwards at ``fisher_fraction`` 1.
        """
        return self._loss_kl(self.dist)[0]

    def gradient(self, retain_graph: bool = False) -> tuple[Tensor, list[Tensor]]:
        """The surrogate and its gradient w.r.t. ``meta``; the gradient w.r.t. ``extra`` goes to
        :attr:`extra_grads`. ``retain_graph`` keeps the graph for curvature products."""
        loss = self.surrogate()
        grads = torch.autograd.grad(loss, [*self.meta, *self.extra], retain_graph=retain_graph)
        self.extra_grads = list(grads[len(self.meta):])
        return loss, list(grads[: len(self.meta)])

    def at(self, meta_values: list[Tensor]) -> tuple[float, float]:
        """Surrogate and KL after re-adapting from ``meta_values`` (no outer graph)."""
        params = {k: v.detach() for k, v in self.readapt(meta_values, None, False).items()}
        with torch.no_grad():
            loss, kl = self.loss_kl(params)
        return float(loss), float(kl)

    def uses_all_states(self, fraction: float) -> bool:
        """Whether curvature products at ``fisher_fraction`` ``fraction`` use every state (and
        with it the graph of :attr:`dist`)."""
        return step_index(self.valid.horizon, fraction) is None

    def fisher_hvp(self, fraction: float, damping: float) -> Callable[[Tensor], Tensor]:
        """``v -> (J^T F J + damping I) v``, the mean KL's Hessian at the old meta-parameters.

        With ``fraction < 1`` both ``J`` (through the inner loop) and ``F`` are estimated on
        ``ceil(fraction * H)`` evenly spaced time steps of every episode (inner-loop and
        validation data), which cuts the cost of every product by about that fraction. The
        estimate is taken at the exact adapted parameters: re-adapting on the subsample gives
        ``sub(meta)``, whose derivative (not value) replaces that of the adapted parameters. With
        more than one inner step the Jacobians of the later steps are those of the subsample's
        own trajectory.
        """
        index = step_index(self.valid.horizon, fraction)
        if index is None:
            d, weights = self.dist, self.weights
        else:
            valid = subsample_steps(self.valid, index)
            weights = state_weights(valid.mask)
            sub = self.readapt(self.meta, fraction, True)
            adapted = {k: self.adapted[k].detach() + (v - v.detach()) for k, v in sub.items()}
            d = self.policy.dist(adapted, valid.obs, valid.mask)
        outputs = [t for t in d if t is not None]
        old = Dist(*(None if t is None else t.detach() for t in d))
        dummies = [torch.zeros_like(t, requires_grad=True) for t in outputs]
        jtu = torch.autograd.grad(
            outputs, self.meta, dummies, create_graph=True, materialize_grads=True
        )

        def hvp(v: Tensor) -> Tensor:
            jv = torch.autograd.grad(jtu, dummies, unflat(v, self.meta), retain_graph=True)
            tangent = Dist(jv[0], jv[1] if len(jv) > 1 else None)
            fjv = self.policy.fisher_product(old, tangent, weights)
            fjv = [t for t in fjv if t is not None]
            out = torch.autograd.grad(
                outputs, self.meta, fjv, retain_graph=True, materialize_grads=True
            )
            return flat(out) + damping * v

        return hvp


class AdamOuter:
    """Adam on the surrogate's meta-gradient, optionally clipped to ``max_grad_norm``."""

    def __init__(self, meta: list[Tensor], lr: float, max_grad_norm: float | None = None):
        self.meta = meta
        self.opt = torch.optim.Adam(meta, lr=lr)
        self.max_grad_norm = max_grad_norm

    def step(self, objective: MetaObjective) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        loss, grads = objective.gradient()
        loss0, gnorm = float(loss.detach()), float(flat(grads).norm())
        if not (math.isfinite(loss0) and math.isfinite(gnorm)):
            raise NonFiniteError(f"outer loss {loss0} or gradient norm {gnorm} is not finite")
        for p, g in zip(self.meta, grads):
            p.grad = g
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.meta, self.max_grad_norm)
        self.opt.step()
        return {"outer_loss": loss0, "grad_norm": gnorm}

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state):
        self.opt.load_state_dict(state)


class TRPOOuter:
    """The MAML paper's TRPO meta-step: natural gradient by CG, then a KL-bounded line search."""

    def __init__(
        self,
        meta: list[Tensor],
        max_kl: float = 1e-2,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        ls_max_steps: int = 15,
        ls_backtrack: float = 0.8,
        fisher_fraction: float = 1.0,
        warm_start: bool = False,
    ):
        self.meta = meta
        self.max_kl, self.cg_iters, self.cg_damping = max_kl, cg_iters, cg_damping
        self.ls_max_steps, self.ls_backtrack = ls_max_steps, ls_backtrack
        self.fisher_fraction, self.warm_start = fisher_fraction, warm_start
        self._last_dir: Tensor | None = None

    def step(self, objective: MetaObjective) -> dict[str, float]:
        # at fisher_fraction 1 the curvature products reuse this graph; otherwise free it now
        full = objective.uses_all_states(self.fisher_fraction)
        loss, grads = objective.gradient(retain_graph=full)
        g = flat(grads).detach()
        loss0, gnorm = float(loss.detach()), float(g.norm())
        if not (math.isfinite(loss0) and math.isfinite(gnorm)):
            raise NonFiniteError(f"outer loss {loss0} or gradient norm {gnorm} is not finite")
        if gnorm == 0.0:  # nothing to follow (e.g. all advantages zero): no step
            return {"outer_loss": loss0, "outer_loss_after": loss0, "grad_norm": 0.0, "kl": 0.0,
                    "step_size": 0.0, "cg_residual": 0.0, "line_search_accepted": 0.0}
        hvp = objective.fisher_hvp(self.fisher_fraction, self.cg_damping)
        x0 = self._last_dir if (self.warm_start and self._last_dir is not None) else None
        stepdir, r = cg_solve(hvp, g, self.cg_iters, x0)
        residual = float(r.norm())
        shs = 0.5 * float(torch.dot(stepdir, g - r))  # H x = g - r: no extra product
        if not (math.isfinite(shs) and shs > 0):
            raise NonFiniteError(f"TRPO curvature s^T H s = {2 * shs} is not positive and finite")
        self._last_dir = stepdir
        full_step = stepdir * math.sqrt(self.max_kl / shs)
        old = [p.detach().clone() for p in self.meta]
        step_frac, kl, new_loss, accepted = 1.0, float("nan"), loss0, False
        for _ in range(self.ls_max_steps):
            candidate = [o - s for o, s in zip(old, unflat(step_frac * full_step, old))]
            new_loss, kl = objective.at(candidate)
            if math.isfinite(new_loss) and new_loss < loss0 and kl <= self.max_kl:
                accepted = True
                break
            step_frac *= self.ls_backtrack
        with torch.no_grad():
            for p, o, c in zip(self.meta, old, candidate):
                p.copy_(c if accepted else o)
        return {
            "outer_loss": loss0,
            "outer_loss_after": new_loss if accepted else loss0,
            "grad_norm": gnorm,
            "kl": kl if accepted else 0.0,
            "step_size": step_frac if accepted else 0.0,
            "cg_residual": residual,
            "line_search_accepted": float(accepted),
        }

    def state_dict(self):
        return {"last_dir": self._last_dir}

    def load_state_dict(self, state):
        self._last_dir = state.get("last_dir")
