"""Outer steps: how the meta-parameters move after a meta-batch.

An outer step is built over the meta-parameters it moves (a dict of leaf tensors, like a torch
optimiser's parameters) and takes one step per meta-iteration from a
:class:`~meta_rl.objective.MetaObjective`, returning its diagnostics.

- :class:`TRPO`: the MAML paper's step. Conjugate gradient solves ``H x = g`` with ``H`` the
  Hessian of the mean KL through the inner loop, then a backtracking line search keeps the mean
  KL within ``max_kl`` and requires the surrogate to improve.
- :class:`Adam`: one Adam step on the meta-gradient.
- :class:`ReptileStep`: ``theta += eps * mean_t(theta'_t - theta)``, or that direction fed to
  Adam; it reads only the adapted parameters, so the inner loop needs no graph.
- :class:`Split`: two steps over disjoint meta-parameters, on the same meta-gradient (Meta-SGD's
  rates with an Adam of their own).

A new outer step (ProMP's clipped objective, say) is one more class with ``needs_graph``,
``step``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor

from meta_rl.config import TRPOConfig
from meta_rl.errors import NonFiniteError
from meta_rl.objective import MetaObjective, flat, unflat
from meta_rl.policies import Params


class OuterStep(Protocol):
    needs_graph: bool
    """whether the step differentiates through the inner loop (``adapt`` keeps its graph)"""

    def step(self, objective: MetaObjective) -> dict[str, float]: ...

    def state_dict(self) -> object: ...

    def load_state_dict(self, state: object) -> None: ...


def _check_finite(loss: float, gnorm: float) -> None:
    if not (math.isfinite(loss) and math.isfinite(gnorm)):
        raise NonFiniteError(f"outer loss {loss} or gradient norm {gnorm} is not finite")


class Adam:
    """Adam on the meta-gradient, optionally clipped to ``max_grad_norm``.

    With a ``prefix`` it is a second step on an objective another step reports: its metrics are
    only its own gradient norm, named ``<prefix>grad_norm``.
    """

    needs_graph = True

    def __init__(self, params: Params, lr: float, max_grad_norm: float | None = None,
                 prefix: str = ""):
        self.params = params
        self.opt = torch.optim.Adam(list(params.values()), lr=lr)
        self.max_grad_norm, self.prefix = max_grad_norm, prefix

    def step(self, objective: MetaObjective) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        loss, all_grads = objective.gradient()
        grads = [all_grads[k] for k in self.params]
        loss0, gnorm = float(loss.detach()), float(flat(grads).norm())
        _check_finite(loss0, gnorm)
        for p, g in zip(self.params.values(), grads):
            p.grad = g
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.max_grad_norm)
        self.opt.step()
        if self.prefix:
            return {f"{self.prefix}grad_norm": gnorm}
        return {"outer_loss": loss0, "grad_norm": gnorm}

    def state_dict(self):
        return self.opt.state_dict()

    def load_state_dict(self, state):
        self.opt.load_state_dict(state)


def cg_solve(avp: Callable[[Tensor], Tensor], b: Tensor, iters: int, x0: Tensor | None = None,
             tol: float = 1e-10) -> tuple[Tensor, Tensor]:
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


class TRPO:
    """The MAML paper's meta-step: natural gradient by CG, then a KL-bounded line search.
    ``s^T H s`` for the step size comes from CG's own residual (``H x = g - r``)."""

    needs_graph = True

    def __init__(self, params: Params, config: TRPOConfig = TRPOConfig()):
        self.params, self.config = params, config
        self._last_dir: Tensor | None = None

    def step(self, objective: MetaObjective) -> dict[str, float]:
        c, keys = self.config, list(self.params)
        # at fisher_fraction 1 the curvature products reuse this graph; otherwise free it now
        full = objective.uses_all_states(c.fisher_fraction)
        loss, grads = objective.gradient(retain_graph=full)
        g = flat([grads[k] for k in keys]).detach()
        loss0, gnorm = float(loss.detach()), float(g.norm())
        _check_finite(loss0, gnorm)
        if gnorm == 0.0:  # nothing to follow (e.g. all advantages zero): no step
            return {"outer_loss": loss0, "outer_loss_after": loss0, "grad_norm": 0.0, "kl": 0.0,
                    "step_size": 0.0, "cg_residual": 0.0, "line_search_accepted": 0.0}
        hvp = objective.fisher_hvp(keys, c.fisher_fraction, c.cg_damping)
        x0 = self._last_dir if (c.cg_warm_start and self._last_dir is not None) else None
        stepdir, r = cg_solve(hvp, g, c.cg_iters, x0)
        residual = float(r.norm())
        shs = 0.5 * float(torch.dot(stepdir, g - r))  # H x = g - r: no extra product
        if not (math.isfinite(shs) and shs > 0):
            raise NonFiniteError(f"TRPO curvature s^T H s = {2 * shs} is not positive and finite")
        self._last_dir = stepdir
        full_step = stepdir * math.sqrt(c.max_kl / shs)
        old = [p.detach().clone() for p in self.params.values()]
        step_frac, kl, new_loss, accepted = 1.0, float("nan"), loss0, False
        for _ in range(c.ls_max_steps):
            candidate = [o - s for o, s in zip(old, unflat(step_frac * full_step, old))]
            new_loss, kl = objective.at(dict(zip(keys, candidate)))
            if math.isfinite(new_loss) and new_loss < loss0 and kl <= c.max_kl:
                accepted = True
                break
            step_frac *= c.ls_backtrack
        with torch.no_grad():
            for p, o, new in zip(self.params.values(), old, candidate):
                p.copy_(new if accepted else o)
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


class ReptileStep:
    """Reptile: ``theta += lr * mean_t(theta'_t - theta)`` (``adam=False``, ``lr`` the paper's
    epsilon), or Adam at ``lr`` given the negated mean displacement as its gradient."""

    needs_graph = False

    def __init__(self, params: Params, lr: float, adam: bool = False):
        self.params, self.lr = params, lr
        self.opt = torch.optim.Adam(list(params.values()), lr=lr) if adam else None

    @torch.no_grad()
    def step(self, objective: MetaObjective) -> dict[str, float]:
        if objective.shard.distributed:  # this rank's sum, all-reduced, over all the tasks
            local = [(objective.adapted[k] - p).sum(0) for k, p in self.params.items()]
            total = objective.shard.all_reduce(flat(local)) / objective.num_tasks
            deltas = dict(zip(self.params, unflat(total, local)))
        else:
            deltas = {k: (objective.adapted[k] - p).mean(0) for k, p in self.params.items()}
        norm = float(flat(list(deltas.values())).norm())
        if not math.isfinite(norm):
            raise NonFiniteError(f"Reptile's displacement norm {norm} is not finite")
        for k, p in self.params.items():
            if self.opt is None:
                p.add_(self.lr * deltas[k])
            else:
                p.grad = -deltas[k]
        if self.opt is not None:
            self.opt.step()
        return {"grad_norm": norm}

    def state_dict(self):
        return None if self.opt is None else self.opt.state_dict()

    def load_state_dict(self, state):
        if self.opt is not None:
            self.opt.load_state_dict(state)


class Split:
    """``main`` moves the meta-parameters that ``side_keys`` rejects, ``side`` the others, each
    on the same meta-gradient (computed once, before either moves); metrics of both."""

    def __init__(self, params: Params, side_keys: Callable[[str], bool],
                 main: Callable[[Params], OuterStep], side: Callable[[Params], OuterStep]):
        self.main = main({k: v for k, v in params.items() if not side_keys(k)})
        self.side = side({k: v for k, v in params.items() if side_keys(k)})
        self.needs_graph = self.main.needs_graph or self.side.needs_graph

    def step(self, objective: MetaObjective) -> dict[str, float]:
        return {**self.main.step(objective), **self.side.step(objective)}

    def state_dict(self):
        return {"main": self.main.state_dict(), "side": self.side.state_dict()}

    def load_state_dict(self, state):
        self.main.load_state_dict(state["main"])
        self.side.load_state_dict(state["side"])
