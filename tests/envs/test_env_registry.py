"""Registry: names, make (by name or "module:Class"), register, and the ValueErrors users see."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import registry

BUILTIN = ["AntDir", "AntVel", "CartPoleDynamics", "HalfCheetahDir", "HalfCheetahDynamics",
           "HalfCheetahVel", "Navigation2D", "PendulumDynamics"]


@dataclasses.dataclass(frozen=True)
class LineTask(envs.Task):
    family: ClassVar[str] = "Line"
    goal: float


class Line(envs.TaskFamily):
    """A user's family: a point on a line walks to a goal (no batched env)."""

    name: ClassVar[str] = "Line"
    task_type = LineTask

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def sample_tasks(self, n, seed):
        n = self.check_count(n)
        return [LineTask(float(g)) for g in np.random.default_rng(seed).uniform(-1, 1, n)]

    def make_env(self, task):
        raise NotImplementedError


@pytest.fixture
def cleanup():
    added = []
    yield added
    for name in added:
        if name in envs.names():
            registry.unregister(name)


def test_builtin_names_are_registered_with_gymnasium():
    assert envs.names() == sorted(envs.names())
    assert set(BUILTIN) <= set(envs.names())
    for name in BUILTIN:
        assert envs.gym_id(name) in gym.registry
        assert envs.make(name).name == name


def test_make_passes_kwargs_and_rejects_bad_ones():
    assert envs.make("Navigation2D", horizon=7).horizon == 7
    with pytest.raises(ValueError, match="does not accept"):
        envs.make("Navigation2D", goal_tolerance=3)
    with pytest.raises(ValueError, match="horizon must be a positive int"):
        envs.make("Navigation2D", horizon=0)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task family 'Navigation3D'.*Navigation2D.*module:ClassName"):
        envs.make("Navigation3D")


def test_make_imports_module_colon_class(tmp_path, monkeypatch):
    (tmp_path / "my_families.py").write_text(textwrap.dedent('''
        import envs
        from envs.navigation import Navigation2D

        class ShortNavigation(Navigation2D):
            default_horizon = 10

        NOT_A_FAMILY = 3
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    family = envs.make("my_families:ShortNavigation")
    assert family.horizon == 10 and isinstance(family, envs.Navigation2D)
    assert envs.make("envs.navigation:Navigation2D").name == "Navigation2D"
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        envs.make("no_such_module:Family")
    with pytest.raises(ValueError, match="has no attribute 'Missing'"):
        envs.make("my_families:Missing")
    with pytest.raises(ValueError, match="not a TaskFamily subclass"):
        envs.make("my_families:NOT_A_FAMILY")
    with pytest.raises(ValueError, match="abstract"):
        envs.make("envs.base:TaskFamily")
    sys.modules.pop("my_families", None)


def test_register_validates_and_refuses_duplicates(cleanup):
    envs.register("Line", Line)
    cleanup.append("Line")
    assert "Line" in envs.names() and isinstance(envs.make("Line"), Line)
    assert envs.gym_id("Line") in gym.registry
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        envs.register("Line", Line)
    with pytest.raises(ValueError, match="already registered"):
        envs.register("Navigation2D", Line)
    envs.register("Line", Line, overwrite=True)
    with pytest.raises(ValueError, match="needs a TaskFamily subclass"):
        envs.register("Thing", object)
    with pytest.raises(ValueError, match="needs a TaskFamily subclass"):
        envs.register("Thing", Line())
    with pytest.raises(ValueError, match="identifier"):
        envs.register("my family", Line)
    with pytest.raises(ValueError, match="does not implement"):
        envs.register("Abstract", envs.TaskFamily)
    assert envs.names().count("Line") == 1


@pytest.mark.parametrize("name", ["Navigation2D", "CartPoleDynamics", "AntDir"])
def test_bad_counts_seeds_and_foreign_tasks(name):
    family = envs.make(name)
    for n in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="n must be a positive int"):
            family.sample_tasks(n, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        family.sample_tasks(2, seed=None)
    foreign = LineTask(0.5)
    with pytest.raises(ValueError, match=f"{name} expects a .*got LineTask"):
        family.make_env(foreign)
    with pytest.raises(ValueError, match="belongs to family 'Line'"):
        family.task_from_json(foreign.to_json())


def test_check_family_reports_a_broken_family_without_crashing():
    report = envs.check_family(Line())
    assert not report.passed
    failed = {r.name: r.message for r in report.failures}
    assert "NotImplementedError" in failed["spaces"]
    assert failed["gymnasium check_env"].endswith(".")
    assert "FAILED" in str(report) and "[FAIL] spaces" in str(report)
    assert report.results[0] == ("contract", True, report.results[0].message)


def test_check_family_catches_a_batched_env_that_disagrees_with_its_view():
    class DriftingNavigation(envs.Navigation2D):
        def make_env(self, task):  # a view of another goal: dynamics no longer agree
            task = self.check_task(task)
            return super().make_env(envs.NavigationTask(task.goal_x + 0.1, task.goal_y))

    report = envs.check_family(DriftingNavigation())
    failed = {r.name: r.message for r in report.failures}
    assert set(failed) == {"batched matches make_env"}, str(report)
    assert "rewards differ at step 1" in failed["batched matches make_env"]
    assert "BatchedEnvView" in failed["batched matches make_env"]


def test_check_family_catches_a_step_envs_that_disagrees_with_env_step():
    class RoundedCheetah(envs.HalfCheetahDir):
        def step_envs(self, envs_, actions):  # rewards rounded: close, but not env.step's
            obs, reward, terminated, truncated = super().step_envs(envs_, actions)
            return obs, reward.round(3), terminated, truncated

    report = envs.check_family(RoundedCheetah())
    failed = {r.name: r.message for r in report.failures}
    assert set(failed) == {"step_envs matches env.step"}, str(report)
    assert "rewards differ at step 1" in failed["step_envs matches env.step"]
    assert "exactly what envs[i].step(actions[i]) returns" in str(report)
    # a family that keeps the default step_envs is not checked for it
    assert not any("step_envs" in r.name for r in envs.check_family("Navigation2D").results)


def test_check_family_argument_errors():
    with pytest.raises(ValueError, match="num_tasks"):
        envs.check_family("Navigation2D", num_tasks=1)
    report = envs.check_family("NoSuchFamily")
    assert not report.passed and "unknown task family" in report.results[0].message
