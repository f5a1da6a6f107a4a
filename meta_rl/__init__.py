"""meta_rl: meta-reinforcement learning (MAML, Meta-SGD, Reptile) on families of Gymnasium tasks.

The learning side; task families live in the top-level ``envs`` package. The pieces a
researcher composes are exported here: policies whose parameters are data (``make_policy``),
samplers, the inner loop (``adapt``, ``replay`` and the inner rules), the meta-objective, the
outer steps, and the trainer and evaluation that wire them together.
"""

from meta_rl.algorithms import BUILDERS, Algorithm, MetaLearner, make_learner
from meta_rl.config import (EvalConfig, InnerConfig, OptimConfig, PolicyConfig, ReturnsConfig,
                            RunConfig, SamplingConfig, TrainConfig, TRPOConfig)
from meta_rl.episodes import Episodes
from meta_rl.evaluation import EvalResult, evaluate
from meta_rl.inner import Adaptation, FixedStep, InnerRule, LearnedRates, adapt, replay
from meta_rl.objective import MetaBatch, MetaObjective, meta_objective
from meta_rl.outer import TRPO, Adam, ReptileStep
from meta_rl.policies import make_policy
from meta_rl.returns import compute_advantages
from meta_rl.sampling import make_sampler
from meta_rl.trainer import Trainer, build

__all__ = [
    "BUILDERS", "Algorithm", "MetaLearner", "make_learner",
    "TrainConfig", "PolicyConfig", "SamplingConfig", "ReturnsConfig", "InnerConfig",
    "OptimConfig", "TRPOConfig", "RunConfig", "EvalConfig",
    "Episodes", "EvalResult", "evaluate",
    "Adaptation", "InnerRule", "FixedStep", "LearnedRates", "adapt", "replay",
    "MetaBatch", "MetaObjective", "meta_objective",
    "TRPO", "Adam", "ReptileStep",
    "make_policy", "compute_advantages", "make_sampler", "Trainer", "build",
]
__version__ = "0.2.0"
