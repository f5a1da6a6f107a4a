"""``check_family``: what a user runs on their own task family before meta-training on it.

It runs Gymnasium's and Stable-Baselines3's env checkers on the envs of sampled tasks, and checks
the family contract (``envs.base``): reproducible task sampling, the task JSON round trip, seeded
determinism, spaces shared by all tasks, rejection of bad input and, where the family has a
batched env, its shapes, dtypes and devices and that it matches ``make_env`` step for step.

Every check becomes a :class:`CheckResult`; an exception raised by the family is caught and
reported as a failed result with its text, so the whole report is always produced.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from typing import Any, Callable, ClassVar, NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.base import Task, TaskFamily

# Checker warnings that are advice, not a sign of a bug (everything else fails the check).
_ADVISORY = (
    "is probably too low",
    "is probably too high",
    "symmetric and normalized",
    "we recommend using np.float32",
    "unconventional shape",
    "precision lowered by casting",
    "is different from the unwrapped version",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckResult(NamedTuple):
    """One check: its name, whether it passed, and a one-sentence message."""

    name: str
    passed: bool
    message: str


@dataclasses.dataclass
class FamilyCheckReport:
    """All results of :func:`check_family`; ``passed`` when every check passed."""

    family: str
    results: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]

    def __str__(self) -> str:
        ok = sum(r.passed for r in self.results)
        head = "passed" if self.passed else "FAILED"
        lines = [f"check_family({self.family}): {head} ({ok}/{len(self.results)} checks)"]
        for r in self.results:
            lines.append(f"  [{'ok' if r.passed else 'FAIL'}] {r.name}: {r.message}")
        return "\n".join(lines)


class _CheckFailed(Exception):
    """A failed check, with its one-sentence message."""


@dataclasses.dataclass(frozen=True)
class _ForeignTask(Task):
    """A task of no family, used to check that families reject foreign tasks."""

    family: ClassVar[str] = "envs.check:NotAFamily"
    x: float = 0.0


# -- helpers ---------------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_checker(checker: Callable[[], Any]) -> list[str]:
    """Run an env checker; return its advisory warnings, raise ``_CheckFailed`` on the rest."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checker()
    advisory, serious = [], []
    for w in caught:
        text = _ANSI.sub("", str(w.message)).replace("WARN: ", "").strip()
        (advisory if any(p in text for p in _ADVISORY) else serious).append(text)
    if serious:
        raise _CheckFailed(f"it warned: {serious[0]}")
    return sorted(set(advisory))


def _sample_actions(space: gym.spaces.Space, steps: int, seed: int) -> list[Any]:
    """``steps`` actions from a copy of ``space`` seeded with ``seed`` (in range)."""
    space = copy.deepcopy(space)
    space.seed(seed)
    return [space.sample() for _ in range(steps)]


def _rollout(env: gym.Env, seed: int, actions: list[Any]) -> list[tuple]:
    """Reset with ``seed`` and step ``actions`` until done: ``[(obs, reward, term, trunc), ...]``."""
    obs, _ = env.reset(seed=seed)
    out = [(np.array(obs, copy=True), 0.0, False, False)]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((np.array(obs, copy=True), float(reward), bool(terminated), bool(truncated)))
        if terminated or truncated:
            break
    return out


def _same_trajectory(a: list[tuple], b: list[tuple], rtol: float, atol: float) -> str | None:
    """``None`` if the trajectories agree, else where they first differ."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x[0].shape != y[0].shape or not np.allclose(x[0], y[0], rtol=rtol, atol=atol):
            return f"observations differ at step {i} ({x[0]} vs {y[0]})"
        if not np.isclose(x[1], y[1], rtol=rtol, atol=atol):
            return f"rewards differ at step {i} ({x[1]} vs {y[1]})"
        if x[2:] != y[2:]:
            return f"(terminated, truncated) differ at step {i} ({x[2:]} vs {y[2:]})"
    if len(a) != len(b):
        return f"one episode lasted {len(a) - 1} steps and the other {len(b) - 1}"
    return None


def _all_same(a: list[list[tuple]], b: list[list[tuple]], tol: float,
              label: Callable[[int], str]) -> int:
    """Raise at the first pair ``a[i]``, ``b[i]`` of trajectories that differ (``label(i)`` names
    them); else return the longest one's step count."""
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        diff = _same_trajectory(x, y, rtol=tol, atol=tol)
        if diff:
            raise _CheckFailed(f"{label(i)} disagree: {diff}")
    return max(len(t) for t in a) - 1


def _batched_actions(space: gym.spaces.Space, shape: tuple[int, int], gen: torch.Generator):
    """In-range actions ``[T, E, ...]`` for a Box or Discrete space, on the CPU."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(int(space.start), int(space.start + space.n), shape, generator=gen)
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    low, high = low.clamp(min=-1e3), high.clamp(max=1e3)
    u = torch.rand((*shape, *space.shape), generator=gen)
    return low + (high - low) * u


def _view_action(space: gym.spaces.Space, action: torch.Tensor) -> Any:
    if isinstance(space, gym.spaces.Discrete):
        return np.int64(action.item())
    return action.numpy().astype(space.dtype)


# -- the checks ------------------------------------------------------------------------------------


class _Checker:
    """Runs the checks in order, recording one :class:`CheckResult` each."""

    def __init__(self, family: TaskFamily, num_tasks: int, seed: int, steps: int):
        self.family, self.num_tasks, self.seed, self.steps = family, num_tasks, seed, steps
        self.results: list[CheckResult] = []
        self.tasks: list[Task] = []

    def run(self, name: str, check: Callable[[], str], fix: str) -> bool:
        """Run ``check`` (returns a success message); on failure record what went wrong + ``fix``."""
        try:
            message = check()
            self.results.append(CheckResult(name, True, message))
            return True
        except _CheckFailed as exc:
            self.results.append(CheckResult(name, False, f"{exc}; {fix}."))
        except Exception as exc:  # the family's own bug: report it, don't crash
            self.results.append(CheckResult(name, False, f"raised {_error_text(exc)}; {fix}."))
        return False

    # each check returns a success message or raises

    def contract(self) -> str:
        fam = self.family
        if not fam.name:
            raise _CheckFailed("the family has no name")
        tt = fam.task_type
        if not (isinstance(tt, type) and issubclass(tt, Task) and tt is not Task):
            raise _CheckFailed(f"task_type is {tt!r}, not a subclass of envs.Task")
        if not (dataclasses.is_dataclass(tt) and tt.__dataclass_params__.frozen):
            raise _CheckFailed(f"{tt.__name__} is not a frozen dataclass")
        if tt.family != fam.name:
            raise _CheckFailed(f"{tt.__name__}.family is {tt.family!r}, not {fam.name!r}")
        if not isinstance(fam.observation_space, gym.spaces.Box):
            raise _CheckFailed(f"observation_space is {fam.observation_space!r}, not a Box")
        if not isinstance(fam.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise _CheckFailed(f"action_space is {fam.action_space!r}, not a Box or Discrete")
        return f"{tt.__name__} tasks, horizon {fam.horizon}, {fam.action_space}"

    def sampling(self) -> str:
        fam, n, seed = self.family, self.num_tasks, self.seed
        self.tasks = fam.sample_tasks(n, seed)
        if not isinstance(self.tasks, list) or len(self.tasks) != n:
            raise _CheckFailed(f"sample_tasks({n}, {seed}) returned {self.tasks!r}, not a list of {n}")
        for task in self.tasks:
            if not isinstance(task, fam.task_type):
                raise _CheckFailed(f"sample_tasks returned a {type(task).__name__}")
        if fam.sample_tasks(n, seed) != self.tasks:
            raise _CheckFailed(f"sample_tasks({n}, {seed}) gave different tasks on a second call")
        many = max(n, 32)  # enough that a family with a few discrete tasks still differs
        if fam.sample_tasks(many, seed + 1) == fam.sample_tasks(many, seed):
            raise _CheckFailed(
                f"sample_tasks({many}, seed) gave the same tasks for seeds {seed} and {seed + 1}"
            )
        for bad in (0, -1):
            try:
                fam.sample_tasks(bad, seed)
            except ValueError:
                continue
            raise _CheckFailed(f"sample_tasks({bad}, {seed}) did not raise a ValueError")
        return "same seed same tasks, different seeds differ, n <= 0 rejected"

    def json_round_trip(self) -> str:
        for task in self.tasks:
            data = json.loads(json.dumps(task.to_json()))
            back = self.family.task_from_json(data)
            if back != task or hash(back) != hash(task):
                raise _CheckFailed(f"{task!r} came back from JSON as {back!r}")
        return f"{len(self.tasks)} tasks survive json.dumps/loads and task_from_json"

    def rejects_foreign_tasks(self) -> str:
        for what, call in (
            ("check_task", lambda: self.family.check_task(_ForeignTask())),
            ("make_env", lambda: self.family.make_env(_ForeignTask())),
        ):
            try:
                call()
            except ValueError:
                continue
            raise _CheckFailed(f"{what} accepted a task from another family")
        return "check_task and make_env raise ValueError on another family's task"

    def spaces(self) -> str:
        fam = self.family
        for task in self.tasks:
            env = fam.make_env(task)
            try:
                if env.observation_space != fam.observation_space:
                    raise _CheckFailed(
                        f"the env of {task!r} has observation space {env.observation_space}, "
                        f"the family {fam.observation_space}"
                    )
                if env.action_space != fam.action_space:
                    raise _CheckFailed(
                        f"the env of {task!r} has action space {env.action_space}, "
                        f"the family {fam.action_space}"
                    )
            finally:
                env.close()
        return "every task's env has the family's spaces"

    def gymnasium_checker(self) -> str:
        from gymnasium.utils.env_checker import check_env

        notes = []
        for task in self.tasks:
            env = self.family.make_env(task)
            try:
                notes += _run_checker(lambda: check_env(env, skip_render_check=True))
            finally:
                env.close()
        return "passed" + (f" (advice: {'; '.join(sorted(set(notes)))})" if notes else "")

    def sb3_checker(self) -> str:
        from stable_baselines3.common.env_checker import check_env

        notes = []
        for task in self.tasks:
            env = self.family.make_env(task)
            try:
                notes += _run_checker(lambda: check_env(env, warn=True, skip_render_check=True))
            finally:
                env.close()
        return "passed" + (f" (advice: {'; '.join(sorted(set(notes)))})" if notes else "")

    def seed_determinism(self) -> str:
        task = self.tasks[0]
        actions = _sample_actions(self.family.action_space, self.steps, self.seed)
        env_a, env_b = self.family.make_env(task), self.family.make_env(task)
        try:
            first = _rollout(env_a, self.seed, actions)
            again = _rollout(env_a, self.seed, actions)
            other = _rollout(env_b, self.seed, actions)
        finally:
            env_a.close()
            env_b.close()
        for label, traj in (("the same env reset again", again), ("a second env", other)):
            diff = _same_trajectory(first, traj, rtol=0, atol=0)
            if diff:
                raise _CheckFailed(f"with reset seed {self.seed} and the same actions, {label}: {diff}")
        return f"same reset seed and actions give the same {len(first) - 1}-step trajectory"

    def batched_contract(self) -> str:
        fam, tasks, E = self.family, self.tasks, 2
        T = len(tasks)
        env = fam.make_batched(tasks, E, "cpu")
        obs_dim = fam.observation_space.shape
        discrete = isinstance(fam.action_space, gym.spaces.Discrete)
        obs = env.reset(seed=self.seed)
        self._expect(obs, "reset() observations", (T, E, *obs_dim), torch.float32)
        if not torch.equal(obs, env.reset(seed=self.seed)):
            raise _CheckFailed(f"reset(seed={self.seed}) twice gave different observations")
        gen = torch.Generator().manual_seed(self.seed)
        for t in range(1, env.horizon + 1):
            out = env.step(_batched_actions(fam.action_space, (T, E), gen))
            if not (isinstance(out, tuple) and len(out) == 4):
                raise _CheckFailed("step() must return (obs, reward, terminated, truncated)")
            obs, reward, terminated, truncated = out
            self._expect(obs, "step() observations", (T, E, *obs_dim), torch.float32)
            self._expect(reward, "rewards", (T, E), None)
            self._expect(terminated, "terminated", (T, E), torch.bool)
            self._expect(truncated, "truncated", (T, E), torch.bool)
            if not reward.is_floating_point():
                raise _CheckFailed(f"rewards have dtype {reward.dtype}, not a float dtype")
            if (terminated & truncated).any():
                raise _CheckFailed(f"terminated and truncated are both true at step {t}")
            if not (torch.isfinite(obs).all() and torch.isfinite(reward).all()):
                raise _CheckFailed(f"non-finite observations or rewards at step {t}")
            if t == env.horizon and not (terminated | truncated).all():
                raise _CheckFailed(f"after horizon={env.horizon} steps some copies are neither terminated nor truncated")
        wrong = torch.zeros((T + 1, E), dtype=torch.int64) if discrete else torch.zeros((T + 1, E, *fam.action_space.shape))
        self._expect_value_error(lambda: env.step(wrong), "actions of the wrong shape")
        meta = torch.zeros((T, E) if discrete else (T, E, *fam.action_space.shape),
                           dtype=torch.int64 if discrete else torch.float32, device="meta")
        self._expect_value_error(lambda: env.step(meta), "actions on the wrong device")
        self._expect_value_error(lambda: fam.make_batched(tasks, 0, "cpu"), "envs_per_task=0")
        self._expect_value_error(lambda: fam.make_batched([_ForeignTask()], 1, "cpu"),
                                 "a task from another family")
        devices = "cpu"
        if torch.cuda.is_available():
            cuda = fam.make_batched(tasks, E, "cuda")
            obs = cuda.reset(seed=self.seed)
            if obs.device.type != "cuda":
                raise _CheckFailed(f"make_batched(..., 'cuda') returned observations on {obs.device}")
            gen = torch.Generator().manual_seed(self.seed)
            for item in cuda.step(_batched_actions(fam.action_space, (T, E), gen).cuda()):
                if item.device.type != "cuda":
                    raise _CheckFailed(f"a cuda batched env returned a tensor on {item.device}")
            devices = "cpu and cuda"
        return (f"[T, E, ...] shapes and dtypes on {devices}, truncated at the horizon, "
                "bad actions and tasks rejected")

    def batched_matches_env(self) -> str:
        fam, tasks, E = self.family, self.tasks, 2
        T, seed = len(tasks), self.seed
        batched = fam.make_batched(tasks, E, "cpu")
        views = [fam.make_env(task) for task in tasks for _ in range(E)]
        try:
            obs = batched.reset(seed=seed)
            b_traj: list[list[tuple]] = [[] for _ in views]
            v_traj: list[list[tuple]] = [[] for _ in views]
            alive = [True] * len(views)
            for i, view in enumerate(views):
                v_obs, _ = view.reset(seed=seed + i)
                v_traj[i].append((np.array(v_obs), 0.0, False, False))
                b_traj[i].append((obs.view(T * E, -1)[i].numpy().copy(), 0.0, False, False))
            gen = torch.Generator().manual_seed(seed)
            for _ in range(min(self.steps, batched.horizon)):
                actions = _batched_actions(fam.action_space, (T, E), gen)
                flat = actions.view(T * E, *actions.shape[2:])
                obs, reward, terminated, truncated = (
                    x.reshape(T * E, *x.shape[2:]) for x in batched.step(actions)
                )
                for i, view in enumerate(views):
                    if not alive[i]:
                        continue
                    v_obs, v_rew, v_term, v_trunc, _ = view.step(_view_action(fam.action_space, flat[i]))
                    v_traj[i].append((np.array(v_obs), float(v_rew), bool(v_term), bool(v_trunc)))
                    b_traj[i].append((obs[i].numpy().copy(), float(reward[i]),
                                      bool(terminated[i]), bool(truncated[i])))
                    alive[i] = not (v_term or v_trunc)
                if not any(alive):
                    break
        finally:
            for view in views:
                view.close()
        steps = _all_same(b_traj, v_traj, 1e-4, lambda i: (
            f"batched copy (task {i // E}, env {i % E}) reset with seed {seed} and "
            f"make_env(task).reset(seed={seed + i})"))
        return f"{T} tasks x {E} envs match make_env step for step ({steps} steps)"

    def step_envs_matches_env(self) -> str:
        """``family.step_envs`` on two envs per task against ``env.step`` on twins, exactly."""
        fam, seed = self.family, self.seed
        tasks = [task for task in self.tasks for _ in range(2)]
        together = [fam.make_env(task) for task in tasks]
        alone = [fam.make_env(task) for task in tasks]
        try:
            actions = [_sample_actions(fam.action_space, self.steps, seed + i)
                       for i in range(len(tasks))]
            expected = [_rollout(env, seed + i, actions[i]) for i, env in enumerate(alone)]
            got = [[(np.array(env.reset(seed=seed + i)[0], copy=True), 0.0, False, False)]
                   for i, env in enumerate(together)]
            live = list(range(len(tasks)))
            for t in range(self.steps):
                if not live:
                    break
                obs, reward, terminated, truncated, *_ = fam.step_envs(
                    [together[i] for i in live], np.stack([actions[i][t] for i in live]))
                for k, i in enumerate(live):
                    got[i].append((np.array(obs[k], copy=True), float(reward[k]),
                                   bool(terminated[k]), bool(truncated[k])))
                live = [i for k, i in enumerate(live) if not (terminated[k] or truncated[k])]
        finally:
            for env in together + alone:
                env.close()
        steps = _all_same(got, expected, 0.0, lambda i: (
            f"env {i} (task {i // 2}) stepped by family.step_envs and its twin stepped by env.step"))
        return f"{len(tasks)} envs stepped together equal env.step, exactly ({steps} steps)"

    @staticmethod
    def _expect(x: Any, what: str, shape: tuple, dtype: torch.dtype | None) -> None:
        if not isinstance(x, torch.Tensor):
            raise _CheckFailed(f"{what} are a {type(x).__name__}, not a torch.Tensor")
        if tuple(x.shape) != tuple(shape):
            raise _CheckFailed(f"{what} have shape {list(x.shape)}, expected {list(shape)}")
        if dtype is not None and x.dtype != dtype:
            raise _CheckFailed(f"{what} have dtype {x.dtype}, expected {dtype}")
        if x.device.type != "cpu":
            raise _CheckFailed(f"{what} are on {x.device}, expected the env's device cpu")

    @staticmethod
    def _expect_value_error(call: Callable[[], Any], what: str) -> None:
        try:
            call()
        except ValueError:
            return
        except Exception as exc:
            raise _CheckFailed(f"{what} raised {_error_text(exc)} instead of a ValueError")
        raise _CheckFailed(f"{what} raised no error")


def _always(family: TaskFamily) -> bool:
    return True


#: every check: its name, the :class:`_Checker` method, the fix it suggests, and which families
#: it applies to, in order
_CHECKS: tuple[tuple[str, str, str, Callable[[TaskFamily], bool]], ...] = (
    ("contract", "contract", "set name, a frozen Task subclass as task_type with family = name, "
     "and Box/Discrete spaces", _always),
    ("sample_tasks", "sampling", "draw tasks from np.random.default_rng(seed) and validate n with "
     "TaskFamily.check_count", _always),
    ("task JSON round trip", "json_round_trip", "keep task fields plain floats/ints/strings so "
     "to_json/task_from_json round-trip", _always),
    ("foreign tasks rejected", "rejects_foreign_tasks", "call self.check_task(task) at the top of "
     "make_env and make_batched", _always),
    ("spaces", "spaces", "give every task's env exactly the family's observation_space and "
     "action_space", _always),
    ("gymnasium check_env", "gymnasium_checker", "fix the env so "
     "gymnasium.utils.env_checker.check_env passes (see its message)", _always),
    ("SB3 check_env", "sb3_checker", "fix the env so "
     "stable_baselines3.common.env_checker.check_env passes (see its message)", _always),
    ("seed determinism", "seed_determinism", "draw all randomness from self.np_random after "
     "super().reset(seed=seed)", _always),
    ("step_envs matches env.step", "step_envs_matches_env", "make step_envs(envs, actions) return "
     "exactly what envs[i].step(actions[i]) returns, stacked, for each env",
     lambda f: type(f).step_envs is not TaskFamily.step_envs),
    ("batched contract", "batched_contract", "follow envs.BatchedEnv: [T, E, ...] float32 obs, "
     "float rewards, bool flags on the env's device, truncated at the horizon, and ValueError "
     "(envs.batched.check_actions) on bad input", lambda f: f.batched),
    ("batched matches make_env", "batched_matches_env", "make make_env a view of the batched code "
     "(envs.BatchedEnvView) and seed copy (t, e) like make_env's reset(seed + t*E + e) "
     "(envs.seeded_uniform)", lambda f: f.batched),
)
#: checks whose failure stops the report (the later ones need what they check)
_GATES = ("contract", "sample_tasks")


def check_family(
    family: TaskFamily | type[TaskFamily] | str,
    *,
    num_tasks: int = 2,
    seed: int = 0,
    steps: int = 100,
) -> FamilyCheckReport:
    """Check a task family against the contract; return a report (``report.passed``, ``print(report)``).

    ``family`` is an instance, a ``TaskFamily`` subclass (constructed with no arguments) or a name
    for :func:`envs.make`. ``num_tasks`` tasks are sampled with ``seed``; rollouts last at most
    ``steps`` steps (the batched contract check runs one full horizon).
    """
    from envs.registry import make

    TaskFamily.check_count(num_tasks, "num_tasks")
    TaskFamily.check_count(steps, "steps")
    TaskFamily.check_seed(seed)
    if num_tasks < 2:
        raise ValueError(f"num_tasks must be >= 2 to compare tasks, got {num_tasks}")
    label = family if isinstance(family, str) else getattr(family, "name", repr(family))
    try:
        if isinstance(family, str):
            family = make(family)
        elif isinstance(family, type) and issubclass(family, TaskFamily):
            family = family()
    except Exception as exc:
        # a missing or broken dependency says its own fix; anything else is the constructor's
        fix = "" if isinstance(exc, ImportError) else "; make its constructor work with no arguments"
        return FamilyCheckReport(str(label), [CheckResult(
            "construct", False, f"building the family raised {_error_text(exc)}{fix}.")])
    if not isinstance(family, TaskFamily):
        return FamilyCheckReport(str(label), [CheckResult(
            "contract", False,
            f"{family!r} is not a TaskFamily; subclass envs.TaskFamily and pass an instance.")])

    c = _Checker(family, num_tasks, seed, steps)
    for name, method, fix, applies in _CHECKS:
        if applies(family) and not c.run(name, getattr(c, method), fix) and name in _GATES:
            break  # the checks after it need what it checked
    return FamilyCheckReport(family.name or str(label), c.results)
