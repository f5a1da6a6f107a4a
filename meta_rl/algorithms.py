"""MAML, Meta-SGD and Reptile: each is an inner rule and an outer step.

| algorithm | inner rule (``meta_rl.inner``)          | outer step (``meta_rl.outer``)                 |
|-----------|------------------------------------------|------------------------------------------------|
| MAML      | :class:`FixedStep`: ``theta - alpha g``   | :class:`TRPO` or :class:`Adam` through the loop |
| Meta-SGD  | :class:`LearnedRates`: ``theta - alpha (.) g``, ``alpha`` meta-learned | as MAML, over ``theta`` and ``alpha`` |
| Reptile   | :class:`FixedStep`, first order           | :class:`ReptileStep`: ``theta += eps mean(theta' - theta)`` |

:class:`MetaLearner` runs a meta-iteration for any pair: adapt to the tasks with
:func:`~meta_rl.inner.adapt`, sample validation episodes with the adapted policies (the
post-adaptation return), then take the outer step on the meta-batch's
:class:`~meta_rl.objective.MetaObjective`. A new algorithm is one more entry in
:data:`BUILDERS` (and its name in :data:`meta_rl.config.ALGORITHMS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from meta_rl.config import ReturnsConfig, TrainConfig
from meta_rl.distributed import SINGLE, Shard
from meta_rl.inner import FixedStep, InnerRule, LearnedRates, adapt, detach, policy_params
from meta_rl.objective import MetaBatch, MetaObjective
from meta_rl.errors import NonFiniteError
from meta_rl.outer import TRPO, Adam, OuterStep, ReptileStep, Split
from meta_rl.policies import Params, Policy
from meta_rl.returns import compute_advantages
from meta_rl.sampling import Sampler


@dataclass(frozen=True)
class Algorithm:
    """An inner rule, and how to build the outer step over the meta-parameters."""

    rule: InnerRule
    outer: Callable[[Params], OuterStep]


def gradient_step(config: TrainConfig) -> Callable[[Params], OuterStep]:
    """The outer step that follows the meta-gradient: TRPO or Adam, as ``config`` says."""
    if config.outer_name == "trpo":
        return lambda params: TRPO(params, config.trpo)
    return lambda params: Adam(params, config.outer_lr, config.optim.max_grad_norm)


def maml(config: TrainConfig) -> Algorithm:
    """MAML: a fixed inner step size; TRPO or Adam through the inner loop."""
    return Algorithm(FixedStep(config.inner.inner_lr, config.first_order), gradient_step(config))


def metasgd(config: TrainConfig) -> Algorithm:
    """Meta-SGD: a learned inner rate per parameter element, moved by the outer step with the
    policy (the Meta-SGD paper); with ``rate_lr`` the rates take an Adam step of their own on
    the same meta-gradient while the outer step moves the policy alone."""
    rule = LearnedRates(config.inner.inner_lr, config.first_order)
    outer = gradient_step(config)
    rate_lr = config.optim.rate_lr
    if rate_lr is not None:
        main = outer
        outer = lambda params: Split(  # noqa: E731
            params, rule.owns, main, lambda rates: Adam(rates, rate_lr, prefix="rate_"))
    return Algorithm(rule, outer)


def reptile(config: TrainConfig) -> Algorithm:
    """Reptile: ``K`` first-order inner steps, then a step toward the adapted parameters."""
    adam = config.outer_name == "adam"
    return Algorithm(FixedStep(config.inner.inner_lr, first_order=True),
                     lambda params: ReptileStep(params, config.outer_lr, adam))


BUILDERS: dict[str, Callable[[TrainConfig], Algorithm]] = {
    "maml": maml, "metasgd": metasgd, "reptile": reptile,
}


class MetaLearner:
    """The meta-parameters (the policy's, and the inner rule's own) and one meta-iteration."""

    def __init__(self, policy: Policy, sampler: Sampler, algorithm: Algorithm, params: Params,
                 inner_steps: int = 1, returns: ReturnsConfig = ReturnsConfig(),
                 shard: Shard = SINGLE):
        self.policy, self.sampler, self.rule = policy, sampler, algorithm.rule
        self.inner_steps, self.returns, self.shard = inner_steps, returns, shard
        initial = {**params, **self.rule.init(params)}
        self.meta = {k: v.detach().clone().requires_grad_() for k, v in initial.items()}
        self.outer = algorithm.outer(self.meta)

    def meta_step(self, tasks: list, seed: int) -> dict[str, float]:
        """One meta-iteration on ``tasks``; returns its metrics. With a distributed shard,
        ``tasks`` is the whole meta-batch and this rank takes its slice (``Shard.part``)."""
        total = len(tasks)
        start, stop = self.shard.part(total)
        tasks, rows = tasks[start:stop], (start, total)
        adaptation = adapt(self.policy, self.rule, self.meta, tasks, self.sampler,
                           self.inner_steps, seed, self.returns,
                           differentiable=self.outer.needs_graph, rows=rows)
        valid = self.sampler.sample(tasks, detach(adaptation.params), seed + self.inner_steps,
                                    rows)
        valid_adv = compute_advantages(valid, self.returns)
        metrics = self._metrics(adaptation, valid, total)
        batch = MetaBatch(adaptation.episodes, adaptation.advantages, valid, valid_adv)
        objective = MetaObjective(self.policy, self.rule, self.meta, batch, adaptation.params,
                                  shard=self.shard, num_tasks=total)
        metrics.update(self.outer.step(objective))
        if not all(math.isfinite(float(t.detach().sum())) for t in self.meta.values()):
            raise NonFiniteError("meta-parameters became non-finite after the outer step")
        metrics.update(self.rule.metrics(self.meta))
        return metrics

    def _metrics(self, adaptation, valid, total: int) -> dict[str, float]:
        """Mean returns before and after adapting (and success rates, where the family's envs
        report success), env steps and the inner-loop KL (over all ranks' tasks: one
        all-reduce)."""
        pre = adaptation.episodes[0] if adaptation.episodes else valid
        env_steps = sum(e.num_steps() for e in adaptation.episodes) + valid.num_steps()
        success = pre.success is not None and valid.success is not None
        if not self.shard.distributed:
            metrics = {"pre_adapt_return": float(pre.task_returns().mean()),
                       "post_adapt_return": float(valid.task_returns().mean()),
                       "env_steps": env_steps}
            if success:
                metrics["pre_adapt_success"] = float(pre.task_success().mean())
                metrics["post_adapt_success"] = float(valid.task_success().mean())
            if adaptation.episodes:
                kl, count = self._inner_kl(adaptation.episodes[0], adaptation.params)
                metrics["inner_kl"] = float(kl / count.clamp_min(1))
            return metrics
        kl, count = (self._inner_kl(adaptation.episodes[0], adaptation.params)
                     if adaptation.episodes else (torch.zeros(()), torch.zeros(())))
        values = [pre.task_returns().double().sum().cpu(), valid.task_returns().double().sum().cpu(),
                  torch.tensor(float(env_steps), dtype=torch.float64),
                  kl.double().cpu(), count.double().cpu()]
        if success:  # (the same family on every rank: all or none of them add these)
            values += [pre.task_success().double().sum().cpu(),
                       valid.task_success().double().sum().cpu()]
        sums = self.shard.all_reduce(torch.stack(values))
        metrics = {"pre_adapt_return": float(sums[0] / total),
                   "post_adapt_return": float(sums[1] / total), "env_steps": int(sums[2])}
        if success:
            metrics["pre_adapt_success"] = float(sums[5] / total)
            metrics["post_adapt_success"] = float(sums[6] / total)
        if adaptation.episodes:
            metrics["inner_kl"] = float(sums[3] / sums[4].clamp_min(1))
        return metrics

    @torch.no_grad()
    def _inner_kl(self, episodes, adapted: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """KL between the initial and adapted policies summed over the first inner step's
        states, and their count (the metric is the ratio)."""
        before = self.policy.dist(policy_params(self.policy, detach(self.meta)), episodes.obs,
                                  episodes.mask)
        after = self.policy.dist(detach(adapted), episodes.obs, episodes.mask)
        kl = self.policy.kl(before, after)
        return (kl * episodes.mask).sum(), episodes.mask.sum()

    def state_dict(self) -> dict:
        return {"meta": detach(self.meta), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        meta = state["meta"]
        if list(meta) != list(self.meta):
            raise ValueError(f"the saved meta-parameters {list(meta)} are not this learner's "
                             f"{list(self.meta)}")
        with torch.no_grad():
            for k, v in meta.items():
                self.meta[k].copy_(v)
        self.outer.load_state_dict(state["outer"])


def make_learner(config: TrainConfig, policy: Policy, sampler: Sampler, params: Params,
                 shard: Shard = SINGLE) -> MetaLearner:
    """The meta-learner of ``config.algo`` (its inner rule and outer step) from ``params``."""
    algorithm = BUILDERS[config.algo](config)
    return MetaLearner(policy, sampler, algorithm, params, config.inner.inner_steps,
                       config.returns, shard)
