"""PendulumDynamics: Gymnasium's Pendulum-v1 swing-up with mass, length and gravity varying per
task. Batched in torch; the Gymnasium env is a view of the batched code, and tests check it step
for step against Gymnasium's own ``PendulumEnv``."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import gymnasium as gym
import numpy as np
import torch

from envs.base import BatchedEnv, Task
from envs.batched import (
    BatchedFamily,
    check_actions,
    next_seed,
    seeded_uniform,
    truncation,
    uniform_tasks,
)


@dataclasses.dataclass(frozen=True)
class PendulumTask(Task):
    """The physical parameters of a :class:`PendulumDynamics` task."""

    family: ClassVar[str] = "PendulumDynamics"
    mass: float
    length: float
    gravity: float


class PendulumDynamics(BatchedFamily):
    """Swing a pendulum up and hold it there, with Gymnasium Pendulum-v1 physics, for a pendulum
    whose mass, length and gravity vary per task.

    ## Observation space
    ``Box([-1, -1, -8], [1, 1, 8], (3,), float32)``: ``[cos(theta), sin(theta), theta_dot]``,
    ``theta = 0`` upright.

    ## Action space
    ``Box(-2, 2, (1,), float32)``: the torque ``u``, clipped to ``[-2, 2]`` by the env.

    ## What varies (ranges centred on Gymnasium's m = l = 1, g = 10)
    ``mass ~ U[0.5, 1.5]``, ``length ~ U[0.5, 1.5]``, ``gravity ~ U[8, 12]``.

    ## Dynamics (Gymnasium's, dt = 0.05)
    ``theta_dot' = clip(theta_dot + (3 g / (2 l) sin(theta) + 3 / (m l^2) u) dt, -8, 8)``,
    ``theta' = theta + theta_dot' dt``.

    ## Reward
    ``-(angle_normalize(theta)^2 + 0.1 theta_dot^2 + 0.001 u^2)`` on the state before the step.

    ## Episode end
    Starts at ``theta ~ U[-pi, pi]``, ``theta_dot ~ U[-1, 1]`` from the reset seed. Never
    terminates; truncated after ``horizon`` steps (default 200).
    """

    name: ClassVar[str] = "PendulumDynamics"
    task_type: ClassVar[type[Task]] = PendulumTask
    varies: ClassVar[str] = "mass ~ U[0.5, 1.5], length ~ U[0.5, 1.5], gravity ~ U[8, 12]"
    default_horizon: ClassVar[int] = 200

    #: (low, high) of each task field
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "mass": (0.5, 1.5),
        "length": (0.5, 1.5),
        "gravity": (8.0, 12.0),
    }
    dt: ClassVar[float] = 0.05
    max_speed: ClassVar[float] = 8.0
    max_torque: ClassVar[float] = 2.0

    @property
    def observation_space(self) -> gym.spaces.Box:
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        return gym.spaces.Box(-high, high, dtype=np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-self.max_torque, self.max_torque, (1,), np.float32)

    def sample_tasks(self, n: int, seed: int) -> list[PendulumTask]:
        return uniform_tasks(self, n, seed)

    @property
    def batched_env(self) -> type[BatchedEnv]:
        return PendulumBatched


class PendulumBatched(BatchedEnv):
    """``T x E`` pendulums; state ``theta, theta_dot`` are ``[T, E]`` (see :class:`PendulumDynamics`)."""

    def __init__(
        self, family: PendulumDynamics, tasks: list[PendulumTask], envs_per_task: int,
        device: torch.device,
    ):
        super().__init__(family, tasks, envs_per_task, device)
        self._dt, self._max_speed, self._max_torque = family.dt, family.max_speed, family.max_torque
        m, l, g = self.task_values("mass", "length", "gravity").unbind(-1)  # [T, 1] each
        # theta_dot' = theta_dot + (a sin(theta) + b u) dt, per task
        self._a = 3 * g / (2 * l)
        self._b = 3 / (m * l**2)
        self._action_shape = (self.num_tasks, envs_per_task, 1)
        self._rng = np.random.default_rng()
        self.theta: torch.Tensor | None = None
        self.theta_dot: torch.Tensor | None = None
        self._steps = 0

    def _obs(self) -> torch.Tensor:
        return torch.stack([self.theta.cos(), self.theta.sin(), self.theta_dot], -1)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        seed = next_seed(self._rng) if seed is None else seed
        init = seeded_uniform(
            seed, self.num_tasks, self.envs_per_task, [-math.pi, -1.0], [math.pi, 1.0], self.device
        )
        self.theta, self.theta_dot = init[..., 0], init[..., 1]
        self._steps = 0
        return self._obs()

    def step(self, actions: torch.Tensor):
        check_actions(actions, self._action_shape, self.device, discrete=False)
        if self.theta is None:
            raise RuntimeError("call reset() before step()")
        u = actions[..., 0].to(torch.float32).clamp(-self._max_torque, self._max_torque)
        th, thdot = self.theta, self.theta_dot
        normalized = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        cost = normalized.square() + 0.1 * thdot.square() + 0.001 * u.square()
        new_thdot = (thdot + (self._a * th.sin() + self._b * u) * self._dt).clamp(
            -self._max_speed, self._max_speed
        )
        self.theta, self.theta_dot = th + new_thdot * self._dt, new_thdot
        self._steps += 1
        terminated = torch.zeros_like(th, dtype=torch.bool)
        return self._obs(), cost.neg_(), terminated, truncation(terminated, self._steps, self.horizon)
