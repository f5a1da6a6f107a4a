"""The cases of the distributed equivalence test, computed the same way by one process (in the
test) and by each rank of a ``torchrun`` job (tests/distributed_check.py)."""

from __future__ import annotations

import torch

from meta_rl.config import TrainConfig
from meta_rl.distributed import SINGLE, Shard
from meta_rl.inner import adapt, detach
from meta_rl.objective import MetaBatch, MetaObjective, flat
from meta_rl.returns import compute_advantages
from meta_rl.seeding import iteration_seed
from meta_rl.trainer import build

#: (in float64: ten CG iterations in float32 turn the sums' last bits into a 1e-3 difference of
#: TRPO's step, whichever way the tasks are summed)
BASE = dict(env="Navigation2D", env_kwargs={"horizon": 20}, episodes=4, hidden=(16,), seed=0,
            device="cpu", meta_batch=4, dtype="float64")
CASES = {
    "maml-trpo": dict(algo="maml", outer="trpo"),
    "maml-adam": dict(algo="maml", outer="adam"),
    "metasgd-trpo": dict(algo="metasgd", outer="trpo"),
    "metasgd-adam": dict(algo="metasgd", outer="adam"),
    "reptile": dict(algo="reptile", outer="sgd", inner_steps=2),
    "maml-trpo-5-tasks": dict(algo="maml", outer="trpo", meta_batch=5),  # 2 does not divide 5
    "metasgd-steps-5-tasks": dict(algo="metasgd", meta_batch=5, batch_unit="steps"),
    "maml-workers": dict(algo="maml", env="tests.faulty:Faulty", env_kwargs={"horizon": 10},
                         num_workers=1),
}


def config_of(case: dict) -> TrainConfig:
    return TrainConfig.from_dict({**BASE, **case})


def fixed_batch(case: dict) -> MetaBatch:
    """The whole meta-batch's episodes, sampled by one process (the same on every rank)."""
    config = config_of(case)
    setup = build(config)
    try:
        learner = setup.learner
        tasks = setup.family.sample_tasks(config.sampling.meta_batch, seed=7)
        adaptation = adapt(setup.policy, learner.rule, learner.meta, tasks, setup.sampler,
                           config.inner.inner_steps, 7, config.returns)
        valid = setup.sampler.sample(tasks, detach(adaptation.params), 99)
        return MetaBatch(adaptation.episodes, adaptation.advantages, valid,
                         compute_advantages(valid, config.returns))
    finally:
        setup.close()


def part(batch: MetaBatch, start: int, stop: int) -> MetaBatch:
    """Tasks ``start..stop`` of ``batch``."""
    def cut(x):
        return x.map(lambda t: t[start:stop]) if isinstance(x, tuple) else x[start:stop]

    return MetaBatch([cut(e) for e in batch.episodes], [cut(a) for a in batch.advantages],
                     cut(batch.valid), cut(batch.valid_advantages))


def one_outer_step(case: dict, shard: Shard, batch: MetaBatch):
    """The (combined) meta-gradient on ``batch``, and the meta-parameters after one outer step
    taken on it, by ``shard``'s rank on its slice of the tasks (all of them for ``SINGLE``)."""
    config = config_of(case)
    setup = build(config)  # the outer step is the same object on every rank
    try:
        learner, total = setup.learner, batch.valid.num_tasks
        start, stop = shard.part(total)
        objective = MetaObjective(setup.policy, learner.rule, learner.meta,
                                  part(batch, start, stop), shard=shard, num_tasks=total)
        grad = None
        if learner.outer.needs_graph:
            grad = flat(list(objective.gradient(retain_graph=True)[1].values())).clone()
        learner.outer.step(objective)
        return grad, flat(list(detach(learner.meta).values())).clone()
    finally:
        setup.close()


def one_meta_iteration(case: dict, shard: Shard = SINGLE):
    """The meta-parameters and metrics after one whole meta-iteration (sampling included)."""
    config = config_of(case)
    setup = build(config, shard=shard)
    try:
        seed = iteration_seed(config.seed, 0)
        tasks = setup.family.sample_tasks(config.sampling.meta_batch, seed=seed)
        metrics = setup.learner.meta_step(tasks, seed)
        return flat(list(detach(setup.learner.meta).values())).clone(), metrics
    finally:
        setup.close()
