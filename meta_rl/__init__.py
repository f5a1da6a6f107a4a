"""meta_rl: meta-reinforcement learning (MAML, Meta-SGD, Reptile) on families of Gymnasium tasks.

The learning side. Task families live in the top-level ``envs`` package.
"""

from meta_rl.algorithms import MAML, AlgoConfig, MetaLearner, MetaSGD, Reptile, make_learner
from meta_rl.config import TrainConfig
from meta_rl.episodes import Episodes
from meta_rl.evaluation import EvalResult, evaluate
from meta_rl.inner import adapt
from meta_rl.policies import make_policy
from meta_rl.sampling import make_sampler
from meta_rl.trainer import Trainer, build

__all__ = [
    "MAML", "MetaSGD", "Reptile", "MetaLearner", "AlgoConfig", "make_learner", "TrainConfig",
    "Episodes", "EvalResult", "evaluate", "adapt", "make_policy", "make_sampler", "Trainer", "build",
]
__version__ = "0.1.0"
