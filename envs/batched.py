"""Shared pieces of torch-native batched envs, and the Gymnasium view that makes them single envs.

One source of truth for dynamics: a batched family writes its physics once, as a
:class:`~envs.base.BatchedEnv`, and its ``make_env`` returns :class:`BatchedEnvView`, which wraps
``make_batched([task], 1, "cpu")`` and converts tensors to numpy. This module holds what every
batched env needs, and one helper for any family:

- :func:`uniform_tasks`: ``sample_tasks`` for a family (batched or not) whose task fields are
  independent uniforms;
- :func:`build_batched`: ``make_batched``'s argument checks, then the family's batched env;
- :func:`check_actions`: the cheap (attribute-only, no host sync) action check of ``step``;
- :func:`truncation`: the ``truncated`` flags after ``t`` steps;
- :func:`seeded_uniform`: per-copy initial-state noise with the seeding convention below;
- :class:`BatchedEnvView`: the ``gymnasium.Env`` of one task;
- :class:`BatchedFamily`: a family whose ``make_env`` and ``make_batched`` come from its
  :class:`~envs.base.BatchedEnv` class (``batched_env``) by way of the two above.

Seeding convention: copy ``(t, e)`` of ``batched.reset(seed)`` starts exactly where
``family.make_env(tasks[t]).reset(seed=seed + t * E + e)`` starts, the same rule by which
vector envs seed sub-env ``i`` with ``seed + i``. :func:`seeded_uniform` implements it with a
counter-based hash (no generator state, no Python loop), so random initial states agree between
the batched env, its Gymnasium view and a vector env of views.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar, Sequence

import gymnasium as gym
import numpy as np
import torch

from envs.base import BatchedEnv, Task, TaskFamily

# -- family helpers --------------------------------------------------------------------------------


def uniform_tasks(family: TaskFamily, n: int, seed: int) -> list[Task]:
    """``n`` tasks of ``family`` whose fields are drawn independently and uniformly from
    ``family.ranges`` (``{field: (low, high)}``, every field of ``family.task_type``): field by
    field in the order of ``ranges``, all ``n`` values of one before the next, from
    ``np.random.default_rng(seed)``."""
    ranges = getattr(family, "ranges", None)
    fields = [f.name for f in dataclasses.fields(family.task_type)]
    if not isinstance(ranges, dict) or set(ranges) != set(fields):
        raise ValueError(
            f"{family.name}.ranges must map each field of {family.task_type.__name__} "
            f"({', '.join(fields)}) to its (low, high), got {ranges!r}"
        )
    for name, bounds in ranges.items():
        try:
            lo, hi = map(float, bounds)
        except (TypeError, ValueError):
            lo = hi = math.nan
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(
                f"{family.name}.ranges[{name!r}] must be (low, high) with finite low < high, "
                f"got {bounds!r}"
            )
    n = family.check_count(n)
    rng = np.random.default_rng(family.check_seed(seed))
    columns = {name: rng.uniform(lo, hi, n) for name, (lo, hi) in ranges.items()}
    return [family.task_type(**{name: float(col[i]) for name, col in columns.items()})
            for i in range(n)]


def build_batched(
    family: TaskFamily, env_type: type[BatchedEnv], tasks: Any, envs_per_task: Any,
    device: str | torch.device,
) -> BatchedEnv:
    """``env_type(family, tasks, envs_per_task, device)`` once the arguments of ``make_batched``
    are checked: a non-empty list of the family's tasks, a positive count, a resolved device.
    ``env_type`` takes these four arguments, as :class:`~envs.base.BatchedEnv`'s constructor
    does."""
    tasks = check_tasks(family, tasks)
    envs_per_task = family.check_count(envs_per_task, "envs_per_task")
    return env_type(family, tasks, envs_per_task, resolve_device(device))


# -- step helpers ----------------------------------------------------------------------------------


def check_actions(
    actions: Any, shape: tuple[int, ...], device: torch.device, discrete: bool
) -> None:
    """Raise a ``ValueError`` unless ``actions`` is a tensor of ``shape`` on ``device``, floating
    point for a Box action space or integer for a Discrete one.

    Reads attributes only (no data-dependent check, no host synchronisation), so it costs well
    under a microsecond and can run on every step.
    """
    if not isinstance(actions, torch.Tensor):
        raise ValueError(
            f"actions must be a torch.Tensor of shape {list(shape)} on {device}, "
            f"got {type(actions).__name__}"
        )
    if actions.shape != shape or actions.device != device:
        raise ValueError(
            f"actions must have shape {list(shape)} on device {device}, got shape "
            f"{list(actions.shape)} on device {actions.device}"
        )
    if discrete:
        if actions.is_floating_point() or actions.is_complex() or actions.dtype == torch.bool:
            raise ValueError(
                f"Discrete actions must be an integer tensor (e.g. torch.int64) of shape "
                f"{list(shape)}, got dtype {actions.dtype}"
            )
    elif not actions.is_floating_point():
        raise ValueError(
            f"Box actions must be a floating-point tensor of shape {list(shape)}, "
            f"got dtype {actions.dtype}"
        )


def truncation(terminated: torch.Tensor, steps: int, horizon: int) -> torch.Tensor:
    """``truncated`` flags after ``steps`` steps: true from the horizon on, where not terminated.

    Every copy of a batched env is reset together, so the step count is a Python int and this
    needs no host synchronisation.
    """
    if steps >= horizon:
        return ~terminated
    return torch.zeros_like(terminated)


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)`` with an explicit index for CUDA, so that ``==`` is exact."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def check_tasks(family: TaskFamily, tasks: Any) -> list[Task]:
    """Validate the ``tasks`` argument of ``make_batched``: a non-empty list of the family's tasks."""
    if not isinstance(tasks, (list, tuple)):
        raise ValueError(f"tasks must be a list of {family.name} tasks, got {type(tasks).__name__}")
    TaskFamily.check_count(len(tasks), "number of tasks")
    return [family.check_task(task) for task in tasks]


# -- seeded initial states -------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``x`` in [0, 2**32), without int64 overflow."""
    lo = (x & 0xFFFF) * c
    hi = (((x >> 16) * c) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A well-mixed 32-bit integer hash (Wellons' "lowbias32"), elementwise on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def seeded_uniform(
    seed: int,
    num_tasks: int,
    envs_per_task: int,
    low: Sequence[float],
    high: Sequence[float],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Uniform noise ``[T, E, K]`` in ``[low, high)`` where copy ``(t, e)`` depends only on
    ``seed + t * E + e`` (see the module docstring), ``K = len(low)``.

    Values are computed in float64 and cast to ``dtype``, so they agree across devices.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = num_tasks * envs_per_task
    keys = torch.arange(n, device=device, dtype=torch.int64) + (int(seed) % (1 << 62))
    h = _hash32((keys & _MASK32) ^ _hash32((keys >> 32) ^ 0x5BD1E995))
    low_t = torch.tensor(low, dtype=torch.float64, device=device)
    high_t = torch.tensor(high, dtype=torch.float64, device=device)
    streams = torch.arange(len(low_t), device=device, dtype=torch.int64)
    bits = _hash32(h.unsqueeze(-1) ^ _hash32(streams * 0x9E3779B1 & _MASK32))
    u = (bits.to(torch.float64) + 0.5) * 2.0**-32
    return (low_t + (high_t - low_t) * u).to(dtype).view(num_tasks, envs_per_task, -1)


def next_seed(rng: np.random.Generator) -> int:
    """A fresh reset seed drawn from ``rng`` (used when ``reset(seed=None)``)."""
    return int(rng.integers(0, 2**62))


# -- the Gymnasium view ----------------------------------------------------------------------------


class BatchedEnvView(gym.Env):
    """The ``gymnasium.Env`` of one task of a batched family: ``make_batched([task], 1, "cpu")``
    stepped with numpy in and out, so the family's dynamics live in one place.

    ``reset(seed=s)`` starts where copy ``(0, 0)`` of ``batched.reset(s)`` starts;
    ``reset()`` draws the next seed from ``self.np_random``. Truncation at the family's horizon
    comes from the batched env. ``set_task(task)`` switches the task in place (takes effect at
    the next ``reset``, which must follow).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, family: TaskFamily, task: Task):
        self.family = family
        self.observation_space = copy.deepcopy(family.observation_space)
        self.action_space = copy.deepcopy(family.action_space)
        self._discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self.set_task(task)

    def set_task(self, task: Task) -> None:
        """Switch to ``task`` (one of this family's); call ``reset`` before the next ``step``."""
        self.task = self.family.check_task(task)
        self._env: BatchedEnv = self.family.make_batched([self.task], 1, "cpu")
        self._ready = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs = self._env.reset(next_seed(self.np_random) if seed is None else seed)
        self._ready = True
        return obs[0, 0].numpy().copy(), {}

    def step(self, action):
        if not self._ready:
            raise RuntimeError("call reset() before step() (and after set_task())")
        if self._discrete:
            a = np.asarray(action)
            if a.shape != () or not np.issubdtype(a.dtype, np.integer) or not (
                0 <= int(a) < self.action_space.n
            ):
                raise ValueError(
                    f"action must be an int in [0, {self.action_space.n}), got {action!r}"
                )
            act = torch.tensor([[int(a)]], dtype=torch.int64)
        else:
            a = np.asarray(action, dtype=np.float32)
            if a.shape != self.action_space.shape:
                raise ValueError(
                    f"action must have shape {self.action_space.shape}, got shape {a.shape}"
                )
            act = torch.from_numpy(a.copy()).view(1, 1, *a.shape)
        obs, reward, terminated, truncated = self._env.step(act)
        return (
            obs[0, 0].numpy().copy(),
            float(reward[0, 0]),
            bool(terminated[0, 0]),
            bool(truncated[0, 0]),
            {},
        )

    def __repr__(self) -> str:
        return f"<BatchedEnvView {self.family.name} {self.task}>"


class BatchedFamily(TaskFamily):
    """A family whose dynamics are written once, as a :class:`~envs.base.BatchedEnv`: set
    ``batched_env`` (a property returning the class, which may be defined later in the module);
    ``make_batched`` builds it with :func:`build_batched`'s checks, and ``make_env`` is its
    :class:`BatchedEnvView`. A subclass still gives the spaces and ``sample_tasks``."""

    batched_env: ClassVar[type[BatchedEnv]]

    def make_env(self, task: Task) -> gym.Env:
        return BatchedEnvView(self, task)

    def make_batched(self, tasks: list[Task], envs_per_task: int,
                     device: str | torch.device = "cpu") -> BatchedEnv:
        return build_batched(self, self.batched_env, tasks, envs_per_task, device)
