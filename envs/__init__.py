"""Task families for meta-RL: Gymnasium-native, torch-batched where the dynamics are cheap.

``envs.make(name)`` gives a :class:`TaskFamily`; ``envs.names()`` lists them;
``envs.register(name, cls)`` adds your own (or pass ``"package.module:ClassName"`` to ``make``).
Importing ``envs`` also registers every built-in family with Gymnasium as ``"MetaRL/<name>-v0"``.
"""

from envs.base import BatchedEnv, Task, TaskFamily
from envs.batched import BatchedEnvView, seeded_uniform
from envs.navigation import Navigation2D, NavigationTask
from envs.registry import gym_id, make, names, register

BUILTIN_FAMILIES: tuple[type[TaskFamily], ...] = (Navigation2D,)

for _cls in BUILTIN_FAMILIES:
    register(_cls.name, _cls, overwrite=True)

__all__ = [
    "BUILTIN_FAMILIES",
    "BatchedEnv",
    "BatchedEnvView",
    "Navigation2D",
    "NavigationTask",
    "Task",
    "TaskFamily",
    "gym_id",
    "make",
    "names",
    "register",
    "seeded_uniform",
]
