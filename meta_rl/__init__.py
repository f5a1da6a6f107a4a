"""meta_rl: meta-reinforcement learning (MAML, Meta-SGD, Reptile) on families of Gymnasium tasks.

The learning side; task families live in the top-level ``envs`` package. The pieces a
researcher composes are exported here: policies whose parameters are data (``make_policy``),
samplers, the inner loop (``adapt``, ``replay`` and the inner rules), the meta-objective, the
outer steps, and the trainer and evaluation that wire them together. They are imported when
first used, so that ``meta-rl --help`` (and Ctrl-C during start-up) need not wait for torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "meta_rl.algorithms": ("BUILDERS", "Algorithm", "MetaLearner", "make_learner"),
    "meta_rl.config": ("TrainConfig", "PolicyConfig", "SamplingConfig", "ReturnsConfig",
                       "InnerConfig", "OptimConfig", "TRPOConfig", "RunConfig", "EvalConfig"),
    "meta_rl.episodes": ("Episodes",),
    "meta_rl.evaluation": ("EvalResult", "evaluate"),
    "meta_rl.inner": ("Adaptation", "InnerRule", "FixedStep", "LearnedRates", "adapt", "replay"),
    "meta_rl.objective": ("MetaBatch", "MetaObjective", "meta_objective"),
    "meta_rl.outer": ("TRPO", "Adam", "ReptileStep"),
    "meta_rl.policies": ("make_policy",),
    "meta_rl.progress": ("ConsoleProgress", "ProgressEvent"),
    "meta_rl.returns": ("compute_advantages",),
    "meta_rl.sampling": ("make_sampler",),
    "meta_rl.trainer": ("Trainer", "build"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)
__version__ = "0.2.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'meta_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
