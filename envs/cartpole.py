"""CartPoleDynamics: Gymnasium's CartPole-v1 balance task with the pole's length and mass and the
push force varying per task. Batched in torch; the Gymnasium env is a view of the batched code,
and tests check it step for step against Gymnasium's own ``CartPoleEnv``."""

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
class CartPoleTask(Task):
    """The physical parameters of a :class:`CartPoleDynamics` task."""

    family: ClassVar[str] = "CartPoleDynamics"
    pole_length: float
    pole_mass: float
    force_mag: float


class CartPoleDynamics(BatchedFamily):
    """Balance a pole on a cart by pushing it left or right, with Gymnasium CartPole-v1 physics
    (Euler integration), for a pole and push that vary per task.

    ## Observation space
    ``Box([-4.8, -inf, -0.419, -inf], [4.8, inf, 0.419, inf], (4,), float32)``:
    ``[x, x_dot, theta, theta_dot]`` (Gymnasium's bounds).

    ## Action space
    ``Discrete(2)``: 0 pushes left, 1 pushes right (with force ``force_mag``). Batched actions are
    an integer tensor ``[T, E]``; any value other than 1 pushes left (values are not checked on
    the device, to avoid a host synchronisation).

    ## What varies (ranges around Gymnasium's 0.5, 0.1 and 10)
    ``pole_length ~ U[0.25, 0.75]`` (half the pole's length, as in Gymnasium),
    ``pole_mass ~ U[0.05, 0.5]``, ``force_mag ~ U[5, 15]``. Cart mass 1, gravity 9.8, tau 0.02.

    ## Reward
    ``+1`` for every step, including the one that terminates.

    ## Episode end
    Starts at ``[x, x_dot, theta, theta_dot] ~ U[-0.05, 0.05]^4`` from the reset seed.
    Terminates when ``|x| > 2.4`` or ``|theta| > 12 degrees``; truncated after ``horizon`` steps
    (default 200) when not terminated.
    """

    name: ClassVar[str] = "CartPoleDynamics"
    task_type: ClassVar[type[Task]] = CartPoleTask
    varies: ClassVar[str] = (
        "pole half-length ~ U[0.25, 0.75], pole mass ~ U[0.05, 0.5], force ~ U[5, 15]"
    )
    default_horizon: ClassVar[int] = 200

    #: (low, high) of each task field
    ranges: ClassVar[dict[str, tuple[float, float]]] = {
        "pole_length": (0.25, 0.75),
        "pole_mass": (0.05, 0.5),
        "force_mag": (5.0, 15.0),
    }
    gravity: ClassVar[float] = 9.8
    cart_mass: ClassVar[float] = 1.0
    tau: ClassVar[float] = 0.02
    theta_threshold: ClassVar[float] = 12 * 2 * math.pi / 360
    x_threshold: ClassVar[float] = 2.4

    @property
    def observation_space(self) -> gym.spaces.Box:
        high = np.array(
            [self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf], dtype=np.float32
        )
        return gym.spaces.Box(-high, high, dtype=np.float32)

    @property
    def action_space(self) -> gym.spaces.Discrete:
        return gym.spaces.Discrete(2)

    def sample_tasks(self, n: int, seed: int) -> list[CartPoleTask]:
        return uniform_tasks(self, n, seed)

    @property
    def batched_env(self) -> type[BatchedEnv]:
        return CartPoleBatched


class CartPoleBatched(BatchedEnv):
    """``T x E`` cart-poles; ``state`` is ``[T, E, 4]`` (see :class:`CartPoleDynamics`)."""

    def __init__(
        self, family: CartPoleDynamics, tasks: list[CartPoleTask], envs_per_task: int,
        device: torch.device,
    ):
        super().__init__(family, tasks, envs_per_task, device)
        self._family = family
        # per-task constants [T, 1], named as in Gymnasium's cartpole.py
        self.length, self.masspole, self.force_mag = self.task_values(
            "pole_length", "pole_mass", "force_mag").unbind(-1)
        self.total_mass = self.masspole + family.cart_mass
        self.polemass_length = self.masspole * self.length
        self._action_shape = (self.num_tasks, envs_per_task)
        self._rng = np.random.default_rng()
        self.state: torch.Tensor | None = None
        self._steps = 0

    def reset(self, seed: int | None = None) -> torch.Tensor:
        seed = next_seed(self._rng) if seed is None else seed
        self.state = seeded_uniform(
            seed, self.num_tasks, self.envs_per_task, [-0.05] * 4, [0.05] * 4, self.device
        )
        self._steps = 0
        return self.state.clone()

    def step(self, actions: torch.Tensor):
        check_actions(actions, self._action_shape, self.device, discrete=True)
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        fam = self._family
        x, x_dot, theta, theta_dot = self.state.unbind(-1)
        force = torch.where(actions == 1, self.force_mag, -self.force_mag)
        costheta, sintheta = theta.cos(), theta.sin()
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (fam.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x, theta = x + fam.tau * x_dot, theta + fam.tau * theta_dot
        x_dot, theta_dot = x_dot + fam.tau * xacc, theta_dot + fam.tau * thetaacc
        self.state = torch.stack([x, x_dot, theta, theta_dot], -1)
        self._steps += 1
        terminated = (x.abs() > fam.x_threshold) | (theta.abs() > fam.theta_threshold)
        reward = torch.ones_like(x)
        return self.state.clone(), reward, terminated, truncation(terminated, self._steps, self.horizon)
