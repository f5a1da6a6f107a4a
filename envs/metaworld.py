"""Meta-World's meta-learning benchmarks (ML1, ML10, ML45) as task families, on ``metaworld``
3.1.1 (Farama; Gymnasium API). Install it with ``pip install -e ".[metaworld]"``.

A task is one Sawyer environment class and one goal: the environment's name and the
``rand_vec`` (object and goal positions) that Meta-World's task data gives it. Tasks come from
Meta-World's own benchmark objects (``metaworld.ML1(name, seed)``, ``metaworld.ML10(seed)``,
``metaworld.ML45(seed)``), with their fixed split:

- ``MetaWorldML1(env_name="reach-v3")``: training and test tasks are different goals of one
  environment (50 each);
- ``MetaWorldML10`` / ``MetaWorldML45``: training tasks are goals of 10 / 45 environments, test
  tasks goals of 5 other environments, never seen in training.

``sample_tasks`` draws from the training split; ``sample_split(n, seed, "test")`` from the test
split, which ``meta-rl evaluate`` uses by default. Observations are 39-d (float32 here), actions
4-d in ``[-1, 1]`` (clipped before simulating); an episode lasts ``horizon`` steps (default 500,
Meta-World's ``max_path_length``, which is also the most it allows) and never terminates early.
Each step's ``info["success"]`` says whether the task is solved; an episode succeeds if it was
at any step (Meta-World's rule), which the samplers record.

Building a Sawyer env loads a MuJoCo model (0.1-0.3 s, about 23 MB), so envs are pooled per
process (:class:`SawyerPool`): an env of this family whose task changes class hands its Sawyer
env back and takes one of the new class at its next ``reset``; a task of the same class is set
in place. The pool keeps at most twice as many Sawyer envs as were ever in use at once.
Constructing ML10 or ML45's benchmark object takes tens of seconds; its task lists are cached
in ``$META_RL_CACHE`` (default ``~/.cache/meta_rl``) after the first time.

Meta-World 3.1.1's own entry points have traps this module avoids by using the benchmark objects
directly: ``gym.make('Meta-World/ML1-train', ...)`` is registered only for ``make_vec``, its
registration gives ML1-train the test goals, and its vector envs do not pick a task on reset.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import weakref
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.base import SPLITS, Task, TaskFamily
from envs.locomotion import broken_mujoco

METAWORLD_HINT = 'pip install -e ".[metaworld]"  (metaworld==3.1.1)'


def require_metaworld():
    """The ``metaworld`` module, or an ``ImportError`` saying how to install it."""
    try:
        import metaworld
    except ImportError as exc:
        raise ImportError(f"the Meta-World families need the metaworld package ({exc}); install "
                          f"it with: {METAWORLD_HINT}") from exc
    except OSError as exc:  # metaworld imports mujoco, whose library failed to load
        raise broken_mujoco(exc) from exc
    return metaworld


@dataclasses.dataclass(frozen=True)
class MetaWorldTask(Task):
    """One Meta-World task: an environment name (``"reach-v3"``) and its ``rand_vec``."""

    env_name: str
    rand_vec: tuple[float, ...]

    def __post_init__(self):
        if not isinstance(self.env_name, str) or not self.env_name:
            raise ValueError(f"env_name must be a Meta-World environment name, got "
                             f"{self.env_name!r}")
        try:
            values = tuple(float(v) for v in self.rand_vec)
        except (TypeError, ValueError):
            raise ValueError(f"rand_vec must be a list of numbers, got {self.rand_vec!r}") from None
        object.__setattr__(self, "rand_vec", values)


# -- benchmark task lists, cached ------------------------------------------------------------------

_TASKS: dict[tuple, dict[str, list[tuple[str, tuple[float, ...]]]]] = {}


def _cache_dir() -> Path:
    return Path(os.environ.get("META_RL_CACHE", Path.home() / ".cache" / "meta_rl")) / "metaworld"


def benchmark_tasks(benchmark: str, seed: int, env_name: str | None = None
                    ) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """``{"train": [(env_name, rand_vec), ...], "test": [...]}`` of Meta-World's ``benchmark``
    ("ML1", "ML10", "ML45") built with ``seed``, in Meta-World's order; from memory, then the
    disk cache, then Meta-World itself."""
    key = (benchmark, seed, env_name)
    if key in _TASKS:
        return _TASKS[key]
    metaworld = require_metaworld()
    from importlib.metadata import version as package_version

    version = package_version("metaworld")
    name = f"{benchmark}{'-' + env_name if env_name else ''}-seed{seed}-metaworld{version}.json"
    path = _cache_dir() / name
    tasks = None
    if path.is_file():
        try:
            with open(path) as f:
                data = json.load(f)
            tasks = {s: [(n, tuple(v)) for n, v in data[s]] for s in SPLITS}
        except (OSError, ValueError, KeyError, TypeError):
            tasks = None  # a damaged cache is rebuilt
    if tasks is None:
        if benchmark == "ML1":
            bench = metaworld.ML1(env_name, seed=seed)
        else:
            bench = getattr(metaworld, benchmark)(seed=seed)
        tasks = {
            s: [(t.env_name, tuple(float(x) for x in pickle.loads(t.data)["rand_vec"]))
                for t in (bench.train_tasks if s == "train" else bench.test_tasks)]
            for s in SPLITS
        }
        try:  # atomically: a concurrent process reads either nothing or the whole file
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "w") as f:
                json.dump({s: [[n, list(v)] for n, v in tasks[s]] for s in SPLITS}, f)
            os.replace(tmp, path)
        except OSError:
            pass  # no cache: the next process builds the benchmark again
    _TASKS[key] = tasks
    return tasks


# -- envs ------------------------------------------------------------------------------------------

class SawyerPool:
    """Per process: Meta-World's Sawyer envs (about 23 MB each, mostly the compiled model), kept
    for reuse by environment name, since building one takes 0.1-0.3 s.

    A sub-env switched to another class hands its Sawyer env back, and takes one of its new class
    at ``reset``, so all the envs a sampler retasks are back in the pool before any is taken.
    Bounded: when a new env must be built, the least recently returned idle ones are closed until
    at most ``factor`` times the most envs ever in use at once are alive (unbounded, ML10's and
    ML45's ever-changing classes would keep adding envs of each class until memory ran out).

    The counts are per process: a forked child starts a new ``generation`` with nothing in use
    (it may still reuse the idle envs it inherited), and what a holder takes under one generation
    it gives back under that one.
    """

    def __init__(self, factor: float = 2.0):
        if not factor >= 1:
            raise ValueError(f"factor must be >= 1 (alive envs per env in use), got {factor!r}")
        self.factor = factor
        self.idle: list[tuple[str, gym.Env]] = []  # least recently returned first
        self.in_use = 0
        self.peak = 0
        self.generation = 0

    @property
    def alive(self) -> int:
        return self.in_use + len(self.idle)

    def take(self, env_name: str) -> gym.Env:
        for i in range(len(self.idle) - 1, -1, -1):
            if self.idle[i][0] == env_name:
                env = self.idle.pop(i)[1]
                break
        else:
            limit = self.factor * max(self.peak, self.in_use + 1)
            while self.idle and self.alive + 1 > limit:
                self.idle.pop(0)[1].close()
            env = _build_sawyer(env_name)
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return env

    def give(self, env_name: str, env: gym.Env, generation: int) -> None:
        """Return an env taken under ``generation``; one from before a fork is only kept idle."""
        if generation == self.generation:
            self.in_use -= 1
        self.idle.append((env_name, env))

    def lost(self, generation: int) -> None:
        """An env taken under ``generation`` was garbage-collected without being given back."""
        if generation == self.generation:
            self.in_use -= 1

    def forked(self) -> None:
        self.in_use, self.peak, self.generation = 0, 0, self.generation + 1


POOL = SawyerPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL.forked)


def _build_sawyer(env_name: str) -> gym.Env:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return ALL_V3_ENVIRONMENTS[env_name]()  # (the name was checked by the family's check_task)


class MetaWorldEnv(gym.Env):
    """One Meta-World task as an ordinary Gymnasium env: float32 observations, actions clipped
    to ``[-1, 1]``, truncated after the family's horizon, ``set_task`` to switch task in place
    (it takes effect at the next ``reset``)."""

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, family: "MetaWorldFamily", task: MetaWorldTask):
        self.family = family
        self.observation_space, self.action_space = family.observation_space, family.action_space
        self._sawyer: gym.Env | None = None  # taken from the pool at reset
        self._held: weakref.finalize | None = None  # counts it back if self is lost unclosed
        self._needs_reset = True  # set_task and close take effect at the next reset
        self.task: MetaWorldTask | None = None
        self._steps = 0
        self.set_task(task)

    def set_task(self, task: MetaWorldTask) -> None:
        task = self.family.check_task(task)
        if self.task is not None and self.task.env_name != task.env_name:
            self._release()
        self.task, self._needs_reset = task, True

    @property
    def sawyer(self) -> gym.Env:
        """The underlying Meta-World env, once ``reset`` has given it this env's task."""
        if self._sawyer is None or self._needs_reset:
            raise RuntimeError("call reset() first: the env's task changed or it was closed")
        return self._sawyer

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)  # (Meta-World's reset is deterministic given the task)
        if self._needs_reset:  # a new task, or (after close) no Sawyer env yet
            from metaworld.types import Task as SawyerTask

            if self._sawyer is None:
                self._sawyer = POOL.take(self.task.env_name)
                self._held = weakref.finalize(self, POOL.lost, POOL.generation)
            data = {"rand_vec": np.asarray(self.task.rand_vec, dtype=np.float64),
                    "env_cls": type(self._sawyer), "partially_observable": True}
            self._sawyer.set_task(SawyerTask(env_name=self.task.env_name, data=pickle.dumps(data)))
        obs, info = self._sawyer.reset()
        self._needs_reset = False
        self._steps = 0
        return obs.astype(np.float32), info

    def step(self, action):
        sawyer = self.sawyer
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        obs, reward, terminated, truncated, info = sawyer.step(action)
        self._steps += 1
        truncated = bool(truncated) or self._steps >= self.family.horizon
        return obs.astype(np.float32), float(reward), bool(terminated), truncated, info

    def _release(self) -> None:
        if self._sawyer is not None:
            _, _, (generation,), _ = self._held.detach()  # the pool's generation at the take
            POOL.give(self.task.env_name, self._sawyer, generation)
            self._sawyer = self._held = None
        self._needs_reset = True

    def close(self) -> None:
        self._release()  # the Sawyer env goes back to the pool for the next env of its class


# -- families --------------------------------------------------------------------------------------


class MetaWorldFamily(TaskFamily):
    """Shared machinery of the Meta-World families: the benchmark's tasks, split by Meta-World,
    the spaces and the env. Subclasses set ``benchmark``."""

    task_type: ClassVar[type[Task]] = MetaWorldTask
    default_horizon: ClassVar[int] = 500
    benchmark: ClassVar[str] = ""
    env_name: str | None = None

    def __init__(self, horizon: int | None = None, benchmark_seed: int = 0):
        super().__init__(horizon)
        if self.horizon > 500:
            raise ValueError(f"horizon must be at most 500 (Meta-World's max_path_length), got "
                             f"{self.horizon}")
        self.benchmark_seed = self.check_seed(benchmark_seed)
        require_metaworld()

    def __repr__(self) -> str:
        name = f"env_name={self.env_name!r}, " if self.env_name else ""
        return (f"{type(self).__name__}({name}horizon={self.horizon}, "
                f"benchmark_seed={self.benchmark_seed})")

    @property
    def observation_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-np.inf, np.inf, (39,), np.float32)

    @property
    def action_space(self) -> gym.spaces.Box:
        return gym.spaces.Box(-1.0, 1.0, (4,), np.float32)

    def split_tasks(self, split: str) -> list[MetaWorldTask]:
        """Every task of ``split`` ("train" or "test"), in Meta-World's order."""
        listed = benchmark_tasks(self.benchmark, self.benchmark_seed,
                                 self.env_name)[self.check_split(split)]
        return [self.task_type(name, vec) for name, vec in listed]

    def sample_split(self, n: int, seed: int, split: str = "train") -> list[MetaWorldTask]:
        """``n`` tasks of ``split``, drawn uniformly with ``seed`` (without replacement while
        ``n`` is at most the split's size)."""
        n = self.check_count(n)
        rng = np.random.default_rng(self.check_seed(seed))
        pool = self.split_tasks(split)
        return [pool[i] for i in rng.choice(len(pool), n, replace=n > len(pool))]

    def sample_tasks(self, n: int, seed: int) -> list[MetaWorldTask]:
        return self.sample_split(n, seed, "train")

    def check_task(self, task: Any) -> MetaWorldTask:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        task = super().check_task(task)
        if self.env_name is not None and task.env_name != self.env_name:
            raise ValueError(f"{self!r} has tasks of {self.env_name}, not {task.env_name}")
        if task.env_name not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"{task.env_name!r} is not a Meta-World v3 environment")
        return task

    def make_env(self, task: Task) -> gym.Env:
        return MetaWorldEnv(self, self.check_task(task))


#: what every Meta-World family's envs are, appended to each family's docstring
SAWYER_CONTRACT = """
    Observation: 39 floats (hand and gripper, two objects' poses, the previous frame's; the goal
    slots are zero: tasks are partially observable, as in Meta-World's benchmarks). Action: 4
    floats in ``[-1, 1]`` (hand displacement and gripper effort). Reward: the environment's dense
    Meta-World reward, 0 to 10 a step. Termination: none; truncated after ``horizon`` steps
    (default 500). Success: ``info["success"]``, recorded per episode as success at any step.
"""


def _sawyer_contract(cls):
    """Class decorator: ``cls``'s docstring, then :data:`SAWYER_CONTRACT`."""
    cls.__doc__ = cls.__doc__.rstrip() + "\n" + SAWYER_CONTRACT
    return cls


@dataclasses.dataclass(frozen=True)
class MetaWorldML1Task(MetaWorldTask):
    family: ClassVar[str] = "MetaWorldML1"


@dataclasses.dataclass(frozen=True)
class MetaWorldML10Task(MetaWorldTask):
    family: ClassVar[str] = "MetaWorldML10"


@dataclasses.dataclass(frozen=True)
class MetaWorldML45Task(MetaWorldTask):
    family: ClassVar[str] = "MetaWorldML45"


@_sawyer_contract
class MetaWorldML1(MetaWorldFamily):
    """Meta-World ML1: one Sawyer environment (``env_name``, e.g. ``reach-v3``, ``push-v3``,
    ``pick-place-v3``). What varies: the goal (object and target positions); 50 training goals,
    and 50 other test goals.
    """

    name: ClassVar[str] = "MetaWorldML1"
    task_type: ClassVar[type[Task]] = MetaWorldML1Task
    varies: ClassVar[str] = "goal (object/target position) of one Sawyer env; test goals held out"
    benchmark: ClassVar[str] = "ML1"

    def __init__(self, env_name: str = "reach-v3", horizon: int | None = None,
                 benchmark_seed: int = 0):
        super().__init__(horizon, benchmark_seed)
        if env_name not in require_metaworld().ML1.ENV_NAMES:
            raise ValueError(f"env_name must be one of Meta-World's ML1 environments, e.g. "
                             f"reach-v3, push-v3, pick-place-v3; got {env_name!r}")
        self.env_name = env_name


@_sawyer_contract
class MetaWorldML10(MetaWorldFamily):
    """Meta-World ML10. What varies: the environment and its goal. Training tasks are goals of
    10 environments (reach, push, pick-place, door-open, drawer-close, button-press-topdown,
    peg-insert-side, window-open, sweep, basketball); test tasks are goals of 5 others
    (drawer-open, door-close, shelf-place, sweep-into, lever-pull).
    """

    name: ClassVar[str] = "MetaWorldML10"
    task_type: ClassVar[type[Task]] = MetaWorldML10Task
    varies: ClassVar[str] = "Sawyer env (10 train classes) and goal; 5 test classes held out"
    benchmark: ClassVar[str] = "ML10"


@_sawyer_contract
class MetaWorldML45(MetaWorldFamily):
    """Meta-World ML45. What varies: the environment and its goal. Training tasks are goals of
    45 environments; test tasks are goals of 5 others (bin-picking, box-close, hand-insert,
    door-lock, door-unlock).
    """

    name: ClassVar[str] = "MetaWorldML45"
    task_type: ClassVar[type[Task]] = MetaWorldML45Task
    varies: ClassVar[str] = "Sawyer env (45 train classes) and goal; 5 test classes held out"
    benchmark: ClassVar[str] = "ML45"


METAWORLD_FAMILIES: tuple[type[TaskFamily], ...] = (MetaWorldML1, MetaWorldML10, MetaWorldML45)
