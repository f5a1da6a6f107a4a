"""Task families that misbehave on purpose, for the reliability tests (``tests.faulty:Name``).

Each is a point on a line walking to a goal (as the README's LineGoal), sampled by the worker
samplers. How it misbehaves is steered by environment variables, so that a test can set it for a
``meta-rl`` subprocess and its worker processes:

- ``FAULTY_PIDS``: a folder where every env writes ``<pid>`` when it is built (to check later
  that no process is left);
- ``FAULTY_HANG``: ``worker`` or ``main``: ``step`` sleeps for an hour in a worker process, or in
  the main process (the one that imported this module; workers are forked from it);
- ``FAULTY_BOOM``: a file; while it exists, ``step`` raises;
- ``FAULTY_BOOM_RANK``: a rank (``torchrun``'s ``RANK``) whose envs raise on ``step``;
- ``FAULTY_SLOW_RESET``: seconds every ``reset`` sleeps.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np

import envs

_MAIN_PID = os.getpid()


@dataclasses.dataclass(frozen=True)
class FaultyTask(envs.Task):
    family: ClassVar[str] = "Faulty"
    goal: float


class FaultyEnv(gym.Env):
    def __init__(self, task: FaultyTask, horizon: int, nan: bool = False):
        self.task, self.horizon, self.nan = task, horizon, nan
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, (1,), np.float32)
        if os.environ.get("FAULTY_PIDS"):
            (Path(os.environ["FAULTY_PIDS"]) / str(os.getpid())).touch()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        time.sleep(float(os.environ.get("FAULTY_SLOW_RESET", 0)))
        self.x, self.t = float(self.np_random.uniform(-0.05, 0.05)), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        hang = os.environ.get("FAULTY_HANG")
        in_main = os.getpid() == _MAIN_PID
        if hang == "worker" and not in_main or hang == "main" and in_main:
            time.sleep(3600)
        if os.environ.get("FAULTY_BOOM") and os.path.exists(os.environ["FAULTY_BOOM"]):
            raise RuntimeError("the simulator crashed")
        if os.environ.get("FAULTY_BOOM_RANK", "-") == os.environ.get("RANK"):
            raise RuntimeError(f"the simulator crashed on rank {os.environ['RANK']}")
        self.x += float(np.clip(action[0], -0.1, 0.1))
        self.t += 1
        obs = math.nan if self.nan and self.t == 3 else self.x
        return (np.array([obs], np.float32), -abs(self.x - self.task.goal), False,
                self.t >= self.horizon, {})


class Faulty(envs.TaskFamily):
    """A point on a line walks to a goal ``U[-1, 1]``; misbehaves as the module says."""

    name = "Faulty"
    task_type = FaultyTask
    varies = "goal ~ U[-1, 1]"
    default_horizon = 10
    ranges = {"goal": (-1.0, 1.0)}
    nan = False

    @property
    def observation_space(self):
        return gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    @property
    def action_space(self):
        return gym.spaces.Box(-0.1, 0.1, (1,), np.float32)

    def sample_tasks(self, n, seed):
        return envs.uniform_tasks(self, n, seed)

    def make_env(self, task):
        return FaultyEnv(self.check_task(task), self.horizon, self.nan)


class NaNObservations(Faulty):
    """Its env returns a NaN observation at the third step of every episode."""

    nan = True
