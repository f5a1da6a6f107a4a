"""Task families for meta-RL: Gymnasium-native, torch-batched where the dynamics are cheap.

``envs.make(name)`` gives a :class:`TaskFamily`; ``envs.names()`` lists them;
``envs.register(name, cls)`` adds your own (or pass ``"package.module:ClassName"`` to ``make``);
``envs.check_family(family)`` checks one against the contract. Importing ``envs`` also registers
every built-in family with Gymnasium as ``"MetaRL/<name>-v0"``.
"""

from envs.base import BatchedEnv, Task, TaskFamily
from envs.batched import (BatchedEnvView, BatchedFamily, build_batched, check_actions,
                          next_seed, seeded_uniform, truncation, uniform_tasks)
from envs.cartpole import CartPoleDynamics, CartPoleTask
from envs.check import CheckResult, FamilyCheckReport, check_family
from envs.locomotion import (
    MUJOCO_FAMILIES,
    DirectionTask,
    AntDir,
    AntDirTask,
    AntVel,
    AntVelTask,
    HalfCheetahDir,
    HalfCheetahDirTask,
    HalfCheetahDynamics,
    HalfCheetahDynamicsTask,
    HalfCheetahVel,
    HalfCheetahVelTask,
    VelocityTask,
)
from envs.metaworld import (METAWORLD_FAMILIES, MetaWorldML1, MetaWorldML10, MetaWorldML45,
                            MetaWorldTask)
from envs.navigation import Navigation2D, NavigationTask
from envs.pendulum import PendulumDynamics, PendulumTask
from envs.registry import gym_id, make, names, register

BUILTIN_FAMILIES: tuple[type[TaskFamily], ...] = (
    Navigation2D,
    PendulumDynamics,
    CartPoleDynamics,
    *MUJOCO_FAMILIES,
    *METAWORLD_FAMILIES,
)

for _cls in BUILTIN_FAMILIES:
    register(_cls.name, _cls, overwrite=True)

__all__ = [
    "AntDir",
    "AntDirTask",
    "AntVel",
    "AntVelTask",
    "BUILTIN_FAMILIES",
    "BatchedEnv",
    "BatchedEnvView",
    "BatchedFamily",
    "CartPoleDynamics",
    "CartPoleTask",
    "CheckResult",
    "DirectionTask",
    "FamilyCheckReport",
    "HalfCheetahDir",
    "HalfCheetahDirTask",
    "HalfCheetahDynamics",
    "HalfCheetahDynamicsTask",
    "HalfCheetahVel",
    "HalfCheetahVelTask",
    "MetaWorldML1",
    "MetaWorldML10",
    "MetaWorldML45",
    "MetaWorldTask",
    "Navigation2D",
    "NavigationTask",
    "PendulumDynamics",
    "PendulumTask",
    "Task",
    "VelocityTask",
    "TaskFamily",
    "build_batched",
    "check_actions",
    "check_family",
    "gym_id",
    "make",
    "names",
    "next_seed",
    "register",
    "seeded_uniform",
    "truncation",
    "uniform_tasks",
]
