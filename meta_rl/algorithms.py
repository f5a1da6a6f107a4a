"""MAML, Meta-SGD and Reptile: they differ only in the inner update rule and the outer step.

| algorithm | inner rule (``inner_lr``)                    | outer step (``outer_step``)              |
|-----------|----------------------------------------------|------------------------------------------|
| MAML      | ``theta - alpha * g``, ``alpha`` fixed        | TRPO or Adam through the inner loop      |
| Meta-SGD  | ``theta - alpha (.) g``, ``alpha`` per element, meta-learned | as MAML, over (theta, alpha) |
| Reptile   | as MAML, first order                          | ``theta += eps * mean_t(theta'_t - theta)`` |

A meta-iteration (:meth:`MetaLearner.meta_step`): adapt to the tasks with :func:`adapt`, sample
validation episodes with the adapted policies (the post-adaptation return), then the outer step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from meta_rl.inner import (Adaptation, ReturnsConfig, adapt, detach, readapt,
                           subsample_adaptation)
from meta_rl.outer import AdamOuter, MetaObjective, NonFiniteError, TRPOOuter, flat
from meta_rl.policies import Params, Policy
from meta_rl.returns import compute_advantages
from meta_rl.sampling import Sampler

ALGORITHMS = ("maml", "metasgd", "reptile")
OUTERS = ("trpo", "adam", "sgd")


@dataclass(frozen=True)
class AlgoConfig:
    """What a meta-learner needs beyond the policy and the sampler."""

    inner_steps: int = 1
    """policy-gradient steps in the inner loop (K)"""
    inner_lr: float = 0.1
    """inner step size alpha (Meta-SGD: the initial value of every learned rate)"""
    first_order: bool = False
    """drop second-order terms of the meta-gradient (FO-MAML); decides create_graph"""
    outer: str = "trpo"
    """outer optimiser: trpo or adam (MAML, Meta-SGD); sgd or adam (Reptile)"""
    outer_lr: float = 1e-3
    """Adam's learning rate; Reptile's epsilon with sgd"""
    max_grad_norm: float | None = None
    """clip the outer gradient (Adam) to this norm"""
    max_kl: float = 1e-2
    """TRPO trust region on the mean KL of the adapted policies"""
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_max_steps: int = 15
    ls_backtrack: float = 0.8
    fisher_fraction: float = 0.2
    """fraction of every episode's time steps (evenly spaced; inner-loop and validation data)
    used for TRPO's curvature products"""
    cg_warm_start: bool = False
    """start CG from the previous iteration's direction"""
    returns: ReturnsConfig = ReturnsConfig()
    rate_lr: float | None = None
    """Meta-SGD: Adam's learning rate for the learned inner rates, which then take their own Adam
    step on the post-adaptation surrogate's gradient while the outer step updates the policy
    alone; None: the outer step updates both (the Meta-SGD paper)"""


class MetaLearner:
    """Meta-parameters and one meta-iteration. Subclasses set the inner rule and outer step."""

    name = "maml"

    def __init__(self, policy: Policy, sampler: Sampler, config: AlgoConfig, params: Params):
        self.policy, self.sampler, self.config = policy, sampler, config
        self.params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        self.outer = self._make_outer()

    # -- the two seams ------------------------------------------------------------------------
    def inner_lr(self) -> float | Params:
        return self.config.inner_lr

    def meta_tensors(self) -> list[Tensor]:
        """Everything the outer step updates."""
        return list(self.params.values())

    def _from_meta(self, values: list[Tensor]) -> tuple[Params, float | Params]:
        return dict(zip(self.params, values)), self.config.inner_lr

    def _make_outer(self):
        c = self.config
        if c.outer == "trpo":
            return TRPOOuter(self.meta_tensors(), c.max_kl, c.cg_iters, c.cg_damping,
                             c.ls_max_steps, c.ls_backtrack, c.fisher_fraction, c.cg_warm_start)
        if c.outer == "adam":
            return AdamOuter(self.meta_tensors(), c.outer_lr, c.max_grad_norm)
        raise ValueError(f"{self.name} supports outer 'trpo' or 'adam', got {c.outer!r}")

    def learned_tensors(self) -> list[Tensor]:
        """Everything meta-training learns (checked for non-finite values after each step)."""
        return self.meta_tensors()

    def outer_step(self, tasks: list, adaptation: Adaptation, valid, valid_adv) -> dict:
        return self.outer.step(self._objective(adaptation, valid, valid_adv))

    def _objective(self, adaptation: Adaptation, valid, valid_adv,
                   extra: list[Tensor] = ()) -> MetaObjective:
        def re(values, fraction=None, graph=False):
            params, lr = self._from_meta(values)
            data = adaptation if fraction is None else subsample_adaptation(adaptation, fraction)
            first_order = self.config.first_order or not graph
            return readapt(self.policy, params, data, lr, first_order)

        return MetaObjective(
            self.policy, self.meta_tensors(), adaptation.params, re, valid, valid_adv, extra
        )

    # -- shared -------------------------------------------------------------------------------
    def adapt(self, tasks: list, seed: int, steps: int | None = None, differentiable=False,
              later_lr_scale: float = 1.0, later_lr_decay: float = 1.0):
        """The inner loop from the current meta-parameters (used by training and evaluation);
        step ``k >= 1`` uses ``later_lr_scale * later_lr_decay ** (k - 1)`` times the inner step
        size (:func:`meta_rl.inner.step_scales`)."""
        c = self.config
        steps = c.inner_steps if steps is None else steps
        first_order = c.first_order or not differentiable
        params = self.params if differentiable else detach(self.params)
        lr = self.inner_lr()
        if not differentiable and isinstance(lr, dict):
            lr = detach(lr)
        with torch.set_grad_enabled(differentiable):
            return adapt(self.policy, params, tasks, self.sampler, steps, lr, seed,
                         first_order, c.returns, later_lr_scale, later_lr_decay)

    def meta_step(self, tasks: list, seed: int) -> dict[str, float]:
        """One meta-iteration on ``tasks``; returns its metrics."""
        c = self.config
        adaptation = self.adapt(tasks, seed, differentiable=True)
        valid = self.sampler.sample(tasks, detach(adaptation.params), seed + c.inner_steps)
        valid_adv = compute_advantages(valid, *c.returns)
        pre = adaptation.episodes[0] if adaptation.episodes else valid
        metrics = {
            "pre_adapt_return": float(pre.task_returns().mean()),
            "post_adapt_return": float(valid.task_returns().mean()),
            "env_steps": sum(e.num_steps() for e in adaptation.episodes) + valid.num_steps(),
        }
        if adaptation.episodes:
            metrics["inner_kl"] = self._inner_kl(adaptation)
        metrics.update(self.outer_step(tasks, adaptation, valid, valid_adv))
        if not all(math.isfinite(float(t.detach().sum())) for t in self.learned_tensors()):
            raise NonFiniteError("meta-parameters became non-finite after the outer step")
        metrics.update(self.extra_metrics())
        return metrics

    @torch.no_grad()
    def _inner_kl(self, adaptation: Adaptation) -> float:
        """Mean KL between the initial and adapted policies on the first inner step's states."""
        ep = adaptation.episodes[0]
        before = self.policy.dist(detach(self.params), ep.obs, ep.mask)
        after = self.policy.dist(detach(adaptation.params), ep.obs, ep.mask)
        kl = self.policy.kl(before, after)
        return float((kl * ep.mask).sum() / ep.mask.sum().clamp_min(1))

    def extra_metrics(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {
            "params": detach(self.params),
            "outer": self.outer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.outer.load_state_dict(state["outer"])


class MAML(MetaLearner):
    """MAML: fixed inner step size; TRPO or Adam through the inner loop."""

    name = "maml"


class MetaSGD(MetaLearner):
    """Meta-SGD: a learned inner learning rate for every parameter element.

    By default the outer step (TRPO or Adam) updates the policy and the rates together, as in the
    Meta-SGD paper. With ``rate_lr`` the rates have their own Adam instead: the outer step updates
    the policy with the rates held fixed, and the rates take one Adam step on the surrogate's
    gradient at the meta-parameters that sampled the data (from the same backward pass). Adam
    moves every rate by about ``rate_lr`` per iteration at most, while on Navigation2D the joint
    TRPO step grows the few rates that matter (the output bias's) from 0.1 to above 1 within 200
    iterations. There, with ``rate_lr=1e-3``, one run in ten collapsed and the others matched
    MAML after one step (``docs/results.md``).
    """

    name = "metasgd"

    def __init__(self, policy, sampler, config, params):
        self.lrs = {
            k: torch.full_like(v, config.inner_lr).requires_grad_() for k, v in params.items()
        }
        super().__init__(policy, sampler, config, params)
        self.rate_opt = (None if config.rate_lr is None
                         else torch.optim.Adam(list(self.lrs.values()), lr=config.rate_lr))

    def inner_lr(self) -> Params:
        return self.lrs

    def meta_tensors(self) -> list[Tensor]:
        rates = [] if self.config.rate_lr is not None else list(self.lrs.values())
        return list(self.params.values()) + rates

    def learned_tensors(self) -> list[Tensor]:
        return list(self.params.values()) + list(self.lrs.values())

    def _from_meta(self, values):
        n = len(self.params)
        if self.config.rate_lr is not None:  # the outer step holds the rates fixed
            return dict(zip(self.params, values)), detach(self.lrs)
        return dict(zip(self.params, values[:n])), dict(zip(self.lrs, values[n:]))

    def outer_step(self, tasks, adaptation, valid, valid_adv) -> dict:
        if self.rate_opt is None:
            return super().outer_step(tasks, adaptation, valid, valid_adv)
        # the outer step is over the policy only; the rates' gradient comes from its backward
        # pass, at the meta-parameters that sampled the data
        rates = list(self.lrs.values())
        objective = self._objective(adaptation, valid, valid_adv, extra=rates)
        metrics = self.outer.step(objective)
        rate_grads = objective.extra_grads
        norm = float(flat(rate_grads).norm())
        if not math.isfinite(norm):  # the trainer restores the last good state
            raise NonFiniteError(f"the learned rates' gradient norm {norm} is not finite")
        for rate, grad in zip(rates, rate_grads):
            rate.grad = grad
        self.rate_opt.step()
        self.rate_opt.zero_grad(set_to_none=True)
        return {**metrics, "rate_grad_norm": norm}

    def extra_metrics(self) -> dict[str, float]:
        lrs = torch.cat([v.detach().reshape(-1) for v in self.lrs.values()])
        return {
            "lr_mean": float(lrs.mean()),
            "lr_std": float(lrs.std()),
            "lr_min": float(lrs.min()),
            "lr_max": float(lrs.max()),
        }

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "lrs": detach(self.lrs)}
        if self.rate_opt is not None:
            state["rate_opt"] = self.rate_opt.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["lrs"].items():
                self.lrs[k].copy_(v)
        if self.rate_opt is not None:
            self.rate_opt.load_state_dict(state["rate_opt"])
        super().load_state_dict(state)


class Reptile(MetaLearner):
    """Reptile: ``K`` first-order inner steps, then ``theta += eps * mean_t(theta'_t - theta)``.

    With ``outer='adam'`` the negated mean displacement is fed to Adam as a gradient.
    """

    name = "reptile"

    def _make_outer(self):
        c = self.config
        if c.outer == "sgd":
            return None
        if c.outer == "adam":
            return torch.optim.Adam(self.meta_tensors(), lr=c.outer_lr)
        raise ValueError(f"reptile supports outer 'sgd' or 'adam', got {c.outer!r}")

    def adapt(self, tasks, seed, steps=None, differentiable=False, later_lr_scale=1.0,
              later_lr_decay=1.0):
        return super().adapt(tasks, seed, steps, False, later_lr_scale, later_lr_decay)

    @torch.no_grad()
    def outer_step(self, tasks, adaptation, valid, valid_adv) -> dict:
        deltas = {k: (adaptation.params[k] - p).mean(0) for k, p in self.params.items()}
        norm = float(torch.cat([d.reshape(-1) for d in deltas.values()]).norm())
        if not math.isfinite(norm):
            raise NonFiniteError(f"Reptile's displacement norm {norm} is not finite")
        if self.outer is None:
            for k, p in self.params.items():
                p.add_(self.config.outer_lr * deltas[k])
        else:
            for k, p in self.params.items():
                p.grad = -deltas[k]
            self.outer.step()
        return {"grad_norm": norm}

    def state_dict(self) -> dict:
        return {"params": detach(self.params),
                "outer": None if self.outer is None else self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        if self.outer is not None:
            self.outer.load_state_dict(state["outer"])


def make_learner(name: str, policy: Policy, sampler: Sampler, config: AlgoConfig, params: Params):
    """Build ``maml``, ``metasgd`` or ``reptile``."""
    classes = {"maml": MAML, "metasgd": MetaSGD, "reptile": Reptile}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {sorted(classes)}")
    return classes[name](policy, sampler, config, params)
