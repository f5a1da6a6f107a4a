"""Navigation2D: a point in the plane walks to a goal that varies per task (the MAML paper's 2D
navigation). Batched in torch; the Gymnasium env is a view of the batched code."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from envs.base import BatchedEnv, Task
from envs.batched import BatchedFamily, check_actions, truncation


@dataclasses.dataclass(frozen=True)
class NavigationTask(Task):
    """The goal position of a :class:`Navigation2D` task."""

    family: ClassVar[str] = "Navigation2D"
    goal_x: float
    goal_y: float


class Navigation2D(BatchedFamily):
    """A point starts at the origin and must reach a goal in the plane.

    ## Observation space
    ``Box(-inf, inf, (2,), float32)``: the point's position ``(x, y)``.

    ## Action space
    ``Box(-0.1, 0.1, (2,), float32)``: a displacement. Actions outside the box (a Gaussian
    policy's samples) are clipped to it by the env.

    ## What varies
    The goal, ``(goal_x, goal_y) ~ U[-0.5, 0.5]^2``.

    ## Dynamics and reward
    ``pos' = pos + clip(action, -0.1, 0.1)``; ``reward = -||pos' - goal||_2``.

    ## Episode end
    Starts at ``(0, 0)`` (no randomness). Terminates when both coordinates are within 0.01 of
    the goal's, ``|x' - goal_x| < 0.01`` and ``|y' - goal_y| < 0.01`` (a square, as in the MAML
    authors' ``PointEnvRandGoal``, not a disc of radius 0.01); truncated
    after ``horizon`` steps (default 100) when not terminated.
    """

    name: ClassVar[str] = "Navigation2D"
    task_type: ClassVar[type[Task]] = NavigationTask
    varies: ClassVar[str] = "goal ~ U[-0.5, 0.5]^2"
    default_horizon: ClassVar[int] = 100
    #: 2: the goal is the square of the authors' env (ecf8bb7); 1: a disc of radius 0.01
    revision: ClassVar[int] = 2

    #: half-width of the action box
    max_step: ClassVar[float] = 0.1
    #: half-width of the goal box
    goal_range: ClassVar[float] = 0.5
    #: how close to the goal, in each coordinate, ends an episode
    goal_tolerance: ClassVar[float] = 0.01

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "goal_radius" in vars(cls):  # revision 1's disc; silently ignored would be worse
            raise TypeError(
                f"{cls.__qualname__} sets goal_radius, which Navigation2D no longer reads: since "
                "revision 2 an episode ends when both coordinates are within goal_tolerance of "
                "the goal (a square); set goal_tolerance instead"
            )

    @property
    def observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-self.max_step, self.max_step, (2,), np.float32)

    def sample_tasks(self, n: int, seed: int) -> list[NavigationTask]:
        n = self.check_count(n)
        rng = np.random.default_rng(self.check_seed(seed))
        goals = rng.uniform(-self.goal_range, self.goal_range, (n, 2))
        return [NavigationTask(float(x), float(y)) for x, y in goals]

    @property
    def batched_env(self) -> type[BatchedEnv]:
        return NavigationBatched


class NavigationBatched(BatchedEnv):
    """``T x E`` Navigation2D points; state is the position ``[T, E, 2]`` (see :class:`Navigation2D`)."""

    def __init__(
        self, family: Navigation2D, tasks: list[NavigationTask], envs_per_task: int,
        device: torch.device,
    ):
        super().__init__(family, tasks, envs_per_task, device)
        self._max_step, self._tolerance = family.max_step, family.goal_tolerance
        self.goals = self.task_values("goal_x", "goal_y")  # [T, 1, 2]
        self._action_shape = (self.num_tasks, envs_per_task, 2)
        self._pos: torch.Tensor | None = None
        self._steps = 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._pos = torch.zeros(self._action_shape, dtype=torch.float32, device=self.device)
        self._steps = 0
        return self._pos.clone()

    def step(self, actions: torch.Tensor):
        check_actions(actions, self._action_shape, self.device, discrete=False)
        if self._pos is None:
            raise RuntimeError("call reset() before step()")
        if actions.dtype != torch.float32:
            actions = actions.float()
        pos = actions.clamp(-self._max_step, self._max_step).add_(self._pos)
        self._pos = pos
        diff = pos - self.goals
        dist = torch.hypot(diff[..., 0], diff[..., 1])
        self._steps += 1
        terminated = (diff.abs() < self._tolerance).all(-1)
        return pos.clone(), dist.neg_(), terminated, truncation(terminated, self._steps, self.horizon)
