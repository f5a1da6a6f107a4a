"""Every registered family passes check_family; MuJoCo families match Gymnasium's robots."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest

import envs


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n == "MetaWorldML45" else n  # (builds in ~70 s)
    for n in envs.names()])
def test_check_family_passes(name):
    report = envs.check_family(name)
    assert report.passed, str(report)
    assert "passed" in str(report)


@pytest.mark.parametrize("name", envs.names())
def test_family_docstring_states_the_contract(name):
    doc = type(envs.make(name)).__doc__
    for word in ("Observation", "Action", "varies", "Reward", "Terminat"):
        assert word.lower() in doc.lower(), f"{name}'s docstring does not mention {word}"


@pytest.mark.parametrize("name", ["Navigation2D", "CartPoleDynamics", "HalfCheetahVel"])
def test_gymnasium_make(name):
    family = envs.make(name)
    task = family.sample_tasks(3, seed=1)[2]
    for spec in (task, task.to_json()):
        env = gym.make(envs.gym_id(name), task=spec)
        assert env.unwrapped.task == task
        obs, _ = env.reset(seed=0)
        assert obs in env.observation_space
        env.step(env.action_space.sample())
        env.close()
    default = gym.make(envs.gym_id(name))
    assert default.unwrapped.task == family.sample_tasks(1, seed=0)[0]
    with pytest.raises(ValueError, match="belongs to family"):
        gym.make(envs.gym_id(name), task={"family": "Other", "x": 1})


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            break
    return out


@pytest.mark.parametrize("frame_skip", [None, 1])
def test_half_cheetah_dynamics_at_unit_scales_is_gymnasium_half_cheetah(frame_skip):
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    kwargs = {} if frame_skip is None else {"frame_skip": frame_skip}
    ours = envs.make("HalfCheetahDynamics", **kwargs).make_env(
        envs.HalfCheetahDynamicsTask(1.0, 1.0))
    theirs = HalfCheetahEnv(**kwargs)
    assert ours.unwrapped.dt == theirs.dt == (0.05 if frame_skip is None else 0.01)
    actions = np.random.default_rng(0).uniform(-1, 1, (200, 6)).astype(np.float32)
    a, b = _rollout(ours, 3, actions), _rollout(theirs, 3, actions)
    assert len(a) == len(b) == 201
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_allclose(x[0], y[0], atol=1e-5)
        assert x[1] == pytest.approx(y[1], abs=1e-6)
    assert a[-1][3] and not a[-1][2]  # truncated at the horizon, never terminated


@pytest.mark.parametrize("name", ["HalfCheetahVel", "HalfCheetahDir"])
def test_half_cheetah_goal_rewards(name):
    family = envs.make(name)
    task = family.sample_tasks(1, seed=4)[0]
    env = family.make_env(task)
    env.reset(seed=0)
    action = np.full(6, 0.5, np.float32)
    _, reward, _, _, info = env.step(action)
    v = info["x_velocity"]
    forward = -abs(v - task.velocity) if name == "HalfCheetahVel" else task.direction * v
    assert reward == pytest.approx(forward - 0.05 * 6 * 0.25)
    # actions are clipped to [-1, 1] before the control cost
    _, reward, _, _, info = env.step(np.full(6, 10.0, np.float32))
    v = info["x_velocity"]
    forward = -abs(v - task.velocity) if name == "HalfCheetahVel" else task.direction * v
    assert reward == pytest.approx(forward - 0.05 * 6)


@pytest.mark.parametrize("frame_skip", [None, 2])
def test_ant_dir_matches_gymnasium_ant_with_maml_weights(frame_skip):
    from gymnasium.envs.mujoco.ant_v5 import AntEnv

    kwargs = {} if frame_skip is None else {"frame_skip": frame_skip}
    ours = envs.make("AntDir", **kwargs).make_env(envs.AntDirTask(1))
    theirs = AntEnv(ctrl_cost_weight=0.005, contact_cost_weight=5e-4, healthy_reward=0.05,
                    include_cfrc_ext_in_observation=False, **kwargs)
    assert ours.unwrapped.dt == theirs.dt
    actions = np.random.default_rng(1).uniform(-1, 1, (60, 8)).astype(np.float32)
    a, b = _rollout(ours, 2, actions), _rollout(theirs, 2, actions)
    assert len(a) == len(b)
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_allclose(x[0], y[0], atol=1e-5)
        # the MAML survive bonus is paid on every step; Gymnasium's only while healthy
        assert x[1] == pytest.approx(y[1] + (0.05 if y[2] else 0.0), abs=1e-6)
        assert x[2] == y[2]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "5"])
def test_bad_frame_skip_names_the_value(value):
    with pytest.raises(ValueError, match=rf"frame_skip must be a positive int.*got {value!r}"):
        envs.make("HalfCheetahDir", frame_skip=value)


def test_frame_skip_reaches_envs_made_by_name():
    family = envs.make("HalfCheetahDir", frame_skip=1)
    assert repr(family) == "HalfCheetahDir(horizon=200, frame_skip=1)"
    env = gym.make(envs.gym_id("HalfCheetahDir"), frame_skip=1)
    assert env.unwrapped.dt == pytest.approx(0.01) and env.unwrapped.family.frame_skip == 1
    env.close()


def test_ant_vel_reward_terms():
    family = envs.make("AntVel")
    task = envs.AntVelTask(1.5)
    env = family.make_env(task)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(np.zeros(8, np.float32))
    expected = -abs(info["x_velocity"] - 1.5) + 1.0 + 0.05 + info["reward_contact"]
    assert reward == pytest.approx(expected)


@pytest.mark.parametrize("name", ["HalfCheetahDynamics", "AntVel", "Navigation2D", "PendulumDynamics"])
def test_set_task_in_place_equals_a_fresh_env(name):
    family = envs.make(name)
    first, second = family.sample_tasks(2, seed=0)
    env = family.make_env(first)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.unwrapped.set_task(second)
    fresh = family.make_env(second)
    space = env.action_space
    space.seed(0)
    actions = [space.sample() for _ in range(30)]
    a, b = _rollout(env, 5, actions), _rollout(fresh, 5, actions)
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:4] == y[1:4]
    with pytest.raises(ValueError, match="expects a"):
        env.unwrapped.set_task(envs.NavigationTask(0.0, 0.0) if name != "Navigation2D"
                               else envs.AntVelTask(1.0))


def test_dir_tasks_reject_other_directions():
    with pytest.raises(ValueError, match="direction"):
        envs.HalfCheetahDirTask(0)
    with pytest.raises(ValueError, match="direction"):
        envs.make("AntDir").task_from_json({"family": "AntDir", "direction": 2})


def test_missing_mujoco_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # makes `import mujoco` fail
    for call in (lambda: envs.make("HalfCheetahVel"), lambda: gym.make("MetaRL/AntDir-v0")):
        with pytest.raises(ImportError, match=r'pip install "gymnasium\[mujoco\]"'):
            call()
    # the families still import, list and sample without MuJoCo
    assert "AntVel" in envs.names()


def test_broken_mujoco_says_how_to_repair(monkeypatch, capsys, tmp_path):
    """A mujoco package that imports but cannot load its library (MuJoCo 4's mujoco-core left
    beside a 3.x release) is named, with the repair, by the MuJoCo and Meta-World families and by
    the CLI in one line."""
    import builtins

    from meta_rl.cli import main

    real_import = builtins.__import__
    missing = OSError("libmujoco.so.4.0.1: cannot open shared object file: No such file or "
                      "directory")

    def failing_import(name, *args, **kwargs):
        if name in ("mujoco", "metaworld"):
            raise missing
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    for call in (lambda: envs.make("HalfCheetahVel"),
                 lambda: envs.make("MetaWorldML1", env_name="reach-v3")):
        with pytest.raises(ImportError, match="libmujoco.so.4.0.1") as info:
            call()
        assert "pip uninstall -y mujoco mujoco-core" in str(info.value)
    assert main(["check-env", "HalfCheetahVel"]) != 0
    report = capsys.readouterr().out
    assert "mujoco-core" in report and "constructor" not in report
    assert main(["train", "--env", "HalfCheetahVel", "--out", str(tmp_path / "run")]) != 0
    out = capsys.readouterr()
    printed = (out.out + out.err).strip()
    assert "mujoco-core" in printed and "Traceback" not in printed
    assert len(printed.splitlines()) == 1, printed


@pytest.mark.parametrize("name", ["HalfCheetahDir", "HalfCheetahDynamics", "AntDir"])
def test_step_envs_equals_env_step_exactly(name):
    """The worker processes' batched step gives bit for bit what env.step gives, clipping included,
    with envs of different tasks and seeds, until each episode ends."""
    family = envs.make(name)
    tasks = family.sample_tasks(3, seed=7)
    together = [family.make_env(t) for t in tasks for _ in range(2)]
    alone = [family.make_env(t) for t in tasks for _ in range(2)]
    for i, (a, b) in enumerate(zip(together, alone)):
        np.testing.assert_array_equal(a.reset(seed=i)[0], b.reset(seed=i)[0])
    rng = np.random.default_rng(0)
    live, steps = list(range(len(together))), 0
    while live:
        actions = rng.uniform(-1.5, 1.5, (len(live), family.action_space.shape[0]))
        obs, reward, terminated, truncated = family.step_envs([together[i] for i in live], actions)
        assert obs.dtype == np.float32 and reward.dtype == np.float64
        for k, i in enumerate(live):
            o, r, te, tr, _ = alone[i].step(actions[k])
            np.testing.assert_array_equal(obs[k], o)
            assert (reward[k], terminated[k], truncated[k]) == (r, te, tr)
        live = [i for k, i in enumerate(live) if not (terminated[k] or truncated[k])]
        steps += 1
    assert steps == family.horizon or name == "AntDir"


def test_step_envs_rejects_bad_input():
    family = envs.make("HalfCheetahDir")
    pair = [family.make_env(t) for t in family.sample_tasks(2, seed=0)]
    for env in pair:
        env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(2, 6\)"):
        family.step_envs(pair, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least one env"):
        family.step_envs([], np.zeros((0, 6)))
    other = envs.make("HalfCheetahVel")
    mixed = [pair[0], other.make_env(other.sample_tasks(1, seed=0)[0])]
    with pytest.raises(ValueError, match="one robot and family"):
        family.step_envs(mixed, np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        pair[0].step(np.zeros(5))


def test_default_step_envs_stacks_env_step():
    family = envs.make("PendulumDynamics")
    tasks = family.sample_tasks(2, seed=0)
    together, alone = ([family.make_env(t) for t in tasks] for _ in range(2))
    for i, (a, b) in enumerate(zip(together, alone)):
        a.reset(seed=i)
        b.reset(seed=i)
    actions = np.array([[0.5], [-1.0]], np.float32)
    obs, reward, terminated, truncated = family.step_envs(together, actions)
    for k, env in enumerate(alone):
        o, r, te, tr, _ = env.step(actions[k])
        np.testing.assert_array_equal(obs[k], o)
        assert (reward[k], terminated[k], truncated[k]) == (r, te, tr)
    with pytest.raises(ValueError):
        family.step_envs(together, actions[:1])
