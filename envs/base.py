"""The task-family contract every family (built-in or a user's own) implements.

A *task family* is a distribution over tasks that share observation and action spaces but differ
in a goal or in their dynamics. A family

- samples tasks reproducibly: ``sample_tasks(n, seed) -> list[Task]`` (the training split), and
  ``sample_split(n, seed, split)`` for ``"train"`` or ``"test"`` (the same distribution unless
  the family has a fixed split of its own);
- builds one ordinary Gymnasium env for one task: ``make_env(task) -> gymnasium.Env``;
- optionally builds a torch-native batched env that steps ``T`` tasks x ``E`` copies in one tensor
  operation: ``make_batched(tasks, envs_per_task, device) -> BatchedEnv``;
- optionally steps a list of its ``make_env`` envs faster than one ``env.step`` at a time:
  ``step_envs(envs, actions)``, which the vector sampler calls on each slice of its envs.

A ``Task`` is a frozen dataclass of what varies. It compares equal by value and round-trips
through JSON (``task.to_json()`` / ``family.task_from_json(d)``).

Shapes: ``T`` tasks, ``E`` envs per task, ``O`` observation size, ``A`` action size.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

#: the splits a family samples from: training tasks, and the held-out ones
SPLITS = ("train", "test")


def reported_success(infos) -> np.ndarray | None:
    """``info["success"]`` of each of a step's ``infos`` as a bool array, or ``None`` unless
    every one carries it (Meta-World's envs do; an episode succeeds if it was true at any step)."""
    if all("success" in info for info in infos):
        return np.asarray([bool(info["success"]) for info in infos], dtype=bool)
    return None


@dataclasses.dataclass(frozen=True)
class Task:
    """Base class of a family's task record: a frozen dataclass of plain floats/ints.

    Subclasses add fields (``goal_x: float``...). ``family`` names the family that made it, so
    that a task handed to the wrong family is caught.
    """

    family: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict, ``{"family": name, <field>: value, ...}``."""
        return {"family": self.family, **dataclasses.asdict(self)}


class BatchedEnv(ABC):
    """``T x E`` copies of a family's env, stepped together with tensors on one device.

    Contract (checked by ``envs.check_family``):

    - ``reset(seed) -> obs [T, E, O]`` (float32 on ``device``). Same seed, same observations.
    - ``step(actions) -> (obs [T, E, O], reward [T, E], terminated [T, E], truncated [T, E])``;
      ``actions`` is float ``[T, E, A]`` for a Box action space, integer ``[T, E]`` for Discrete,
      on ``device``. ``terminated`` and ``truncated`` are bool tensors and never both true;
      ``truncated`` becomes true when ``horizon`` steps have been taken.
    - No auto-reset: once a copy has terminated or been truncated, callers ignore its outputs
      (the sampler masks them). Stepping it further is allowed and stays finite.
    - No Python loop over tasks or envs; no host synchronisation inside ``step``.
    """

    num_tasks: int
    envs_per_task: int
    horizon: int
    device: torch.device
    observation_space: gym.spaces.Box
    action_space: gym.spaces.Space

    def __init__(
        self, family: TaskFamily, tasks: list[Task], envs_per_task: int, device: torch.device
    ):
        """Set the attributes above: ``len(tasks)``, the count and the device as given, the
        horizon and spaces from ``family``. :func:`envs.build_batched` constructs a batched env
        with these four arguments, checked."""
        self.tasks = list(tasks)
        self.num_tasks, self.envs_per_task = len(tasks), envs_per_task
        self.horizon, self.device = family.horizon, device
        self.observation_space, self.action_space = family.observation_space, family.action_space

    def task_values(self, *fields: str) -> torch.Tensor:
        """The tasks' values of ``fields``, ``[T, 1, len(fields)]`` float32 on the env's device
        (the middle dimension broadcasts over the ``E`` copies of each task)."""
        rows = [[float(getattr(task, f)) for f in fields] for task in self.tasks]
        return torch.tensor(rows, dtype=torch.float32, device=self.device).view(
            self.num_tasks, 1, len(fields))

    @abstractmethod
    def reset(self, seed: int | None = None) -> torch.Tensor: ...

    @abstractmethod
    def step(
        self, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]: ...


class TaskFamily(ABC):
    """A distribution over tasks. Subclass it, set ``name`` and ``task_type``, implement the rest.

    Subclasses document, as Gymnasium's classic-control envs do: observation and action spaces,
    what varies and its range, the reward formula, the horizon and the termination rule.
    """

    name: ClassVar[str] = ""
    task_type: ClassVar[type[Task]] = Task
    #: what varies, one line, shown by ``meta-rl envs``
    varies: ClassVar[str] = ""
    #: default episode length
    default_horizon: ClassVar[int] = 100
    #: raise it when a change alters what a task is (dynamics, reward, termination): runs record
    #: it, and a run trained on another revision is not resumed or reused as if it were this one
    revision: ClassVar[int] = 1
    #: seconds one env call of the worker samplers may take (building a slice's envs, a reset,
    #: or one step of a slice) before the run stops, naming the family and the call; generous,
    #: since a hung env is the only thing it should catch (a run's ``env_timeout`` overrides it)
    call_timeout: ClassVar[float] = 600.0

    def __init__(self, horizon: int | None = None):
        horizon = self.default_horizon if horizon is None else horizon
        self.horizon = self.check_count(horizon, "horizon")

    # -- the contract -------------------------------------------------------------------------
    @property
    @abstractmethod
    def observation_space(self) -> gym.spaces.Box: ...

    @property
    @abstractmethod
    def action_space(self) -> gym.spaces.Space: ...

    @abstractmethod
    def sample_tasks(self, n: int, seed: int) -> list[Task]:
        """``n`` tasks drawn from the family's distribution; the same seed gives the same tasks."""

    def sample_split(self, n: int, seed: int, split: str = "train") -> list[Task]:
        """``n`` tasks of ``split``: ``"train"`` (what meta-training samples) or ``"test"`` (what
        ``meta-rl evaluate`` adapts to by default).

        A family with a fixed split (Meta-World's held-out classes or goals) overrides this. By
        default both splits are the one distribution ``sample_tasks`` draws from, and held-out
        tasks are held out by their seed: evaluation draws them from a seed stream that training
        never uses (``meta_rl.seeding``).
        """
        self.check_split(split)
        return self.sample_tasks(n, seed)

    @abstractmethod
    def make_env(self, task: Task) -> gym.Env:
        """One Gymnasium env for ``task``, truncated after ``self.horizon`` steps."""

    def make_batched(
        self, tasks: list[Task], envs_per_task: int, device: str | torch.device = "cpu"
    ) -> BatchedEnv:
        """A torch-native env stepping ``len(tasks) x envs_per_task`` copies at once.

        Families whose dynamics are too costly to write in torch leave this out; samplers then
        use Gymnasium vector envs over ``make_env``.
        """
        raise NotImplementedError(f"{type(self).__name__} has no batched env")

    def step_envs(
        self, envs: list[gym.Env], actions: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Step each of ``envs`` (this family's ``make_env`` envs) once, ``envs[i]`` with
        ``actions[i]``: ``(obs [n, O], reward [n] float64, terminated [n], truncated [n] bool)``,
        exactly what ``envs[i].step(actions[i])`` returns, stacked; and, where the envs' ``info``
        carries ``success``, a fifth array ``success [n] bool`` (the samplers record an episode
        as a success if it was true at any step; without it, they record no success).

        The vector sampler calls this every step on each slice of its envs (one slice in the
        main process, one in each worker process).
        This default steps them one by one; a family whose ``env.step`` spends much of its time
        in Python around the simulation can override it (the MuJoCo families do), and
        ``envs.check_family`` then checks it against ``env.step``.
        """
        results = [env.step(action) for env, action in zip(envs, actions, strict=True)]
        obs, reward, terminated, truncated, infos = zip(*results)
        out = (np.stack(obs), np.asarray(reward, dtype=np.float64),
               np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool))
        success = reported_success(infos)
        return out if success is None else (*out, success)

    # -- shared helpers -----------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        """Whether this family overrides ``make_batched``."""
        return type(self).make_batched is not TaskFamily.make_batched

    def task_from_json(self, data: dict[str, Any]) -> Task:
        """Rebuild a task from ``Task.to_json`` output, checking that it belongs here."""
        if not isinstance(data, dict):
            raise ValueError(f"a task must be a JSON object, got {data!r}")
        data = dict(data)
        family = data.pop("family", self.name)
        if family != self.name:
            raise ValueError(f"task belongs to family {family!r}, not {self.name!r}")
        fields = {f.name for f in dataclasses.fields(self.task_type)}
        if set(data) != fields:
            raise ValueError(
                f"a {self.name} task needs exactly the fields {sorted(fields)}, got {sorted(data)}"
            )
        return self.task_type(**data)

    def check_task(self, task: Any) -> Task:
        """Return ``task`` if it is one of this family's tasks, else raise a ``ValueError``."""
        if not isinstance(task, self.task_type):
            raise ValueError(
                f"{self.name} expects a {self.task_type.__name__} (from {self.name}.sample_tasks), "
                f"got {type(task).__name__}: {task!r}"
            )
        return task

    @staticmethod
    def check_count(n: Any, what: str = "n") -> int:
        """Validate a positive int: a count of tasks or envs, a horizon, a frame skip."""
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"{what} must be a positive int, got {n!r}")
        return n

    @staticmethod
    def check_seed(seed: Any) -> int:
        """Validate a ``sample_tasks`` seed: a non-negative int (``None`` would not reproduce)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        return seed

    @staticmethod
    def check_split(split: Any) -> str:
        """Validate a split name: one of :data:`SPLITS`."""
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return split

    def __repr__(self) -> str:
        return f"{type(self).__name__}(horizon={self.horizon})"
