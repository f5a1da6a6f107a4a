"""Meta-World families (envs.metaworld): splits, success, the task JSON round trip, the checks.

They need ``metaworld`` (the ``metaworld`` extra, which the ``test`` extra includes).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import envs

HORIZON = 5


metaworld = pytest.importorskip("metaworld", reason="needs the metaworld extra")
ML10_TEST = {"drawer-open-v3", "door-close-v3", "shelf-place-v3", "sweep-into-v3",
             "lever-pull-v3"}


@pytest.fixture(scope="module")
def ml1():
    return envs.make("MetaWorldML1", env_name="reach-v3", horizon=HORIZON)


@pytest.fixture(scope="module")
def ml10():
    return envs.make("MetaWorldML10", horizon=HORIZON)


def test_ml10_never_trains_on_a_test_class(ml10):
    trained = {t.env_name for seed in range(50) for t in ml10.sample_tasks(20, seed)}
    assert len(trained) == 10 and not trained & ML10_TEST
    tested = {t.env_name for t in ml10.sample_split(200, 0, "test")}
    assert tested == ML10_TEST


def test_ml1_never_trains_on_a_test_goal(ml1):
    test_goals = {t.rand_vec for t in ml1.split_tasks("test")}
    train_goals = {t.rand_vec for t in ml1.split_tasks("train")}
    assert len(test_goals) == len(train_goals) == 50 and not test_goals & train_goals
    drawn = {t.rand_vec for seed in range(50) for t in ml1.sample_tasks(20, seed)}
    assert drawn <= train_goals
    assert {t.rand_vec for t in ml1.sample_split(20, 0, "test")} <= test_goals


@pytest.mark.filterwarnings("ignore:Constant:UserWarning")  # the scripted policy's own advice
def test_a_scripted_episode_succeeds_and_is_recorded(ml1):
    from metaworld.policies import SawyerReachV3Policy

    family = envs.make("MetaWorldML1", env_name="reach-v3", horizon=150)
    task = family.sample_tasks(1, seed=0)[0]
    env = family.make_env(task)
    obs, _ = env.reset(seed=0)
    scripted, succeeded, rewards = SawyerReachV3Policy(), [], []
    for _ in range(family.horizon):
        seen = obs.copy()  # the goal is hidden from the policy (ML1's partially observable tasks);
        seen[36:39] = env.sawyer._target_pos  # Meta-World's scripted policy reads it there
        obs, reward, terminated, truncated, info = env.step(scripted.get_action(seen))
        succeeded.append(bool(info["success"]))
        rewards.append(reward)
        if terminated or truncated:
            break
    env.close()
    assert any(succeeded) and truncated and len(succeeded) == family.horizon
    # the same family's default step_envs hands the success on to the samplers
    env = family.make_env(task)
    env.reset(seed=0)
    *_, success = family.step_envs([env], np.zeros((1, 4), np.float32))
    env.close()
    assert success.dtype == bool and success.shape == (1,)


def test_a_tasks_json_round_trip_rebuilds_the_same_env(ml10):
    for task in ml10.sample_tasks(3, seed=1) + ml10.sample_split(2, 1, "test"):
        back = ml10.task_from_json(json.loads(json.dumps(task.to_json())))
        assert back == task and hash(back) == hash(task)
        actions = np.random.default_rng(0).uniform(-1, 1, (HORIZON, 4)).astype(np.float32)
        trajectories = []
        for t in (task, back):
            env = ml10.make_env(t)
            obs = [env.reset(seed=0)[0]]
            obs += [env.step(a)[0] for a in actions]
            env.close()
            trajectories.append(np.stack(obs))
        np.testing.assert_array_equal(*trajectories)


def test_an_env_switched_to_another_class_is_that_class():
    family = envs.make("MetaWorldML10", horizon=HORIZON)
    reach, push = (next(t for t in family.split_tasks("train") if t.env_name == n)
                   for n in ("reach-v3", "push-v3"))
    env = family.make_env(reach)
    env.reset(seed=0)  # holds a reach Sawyer env, which the switch gives back
    env.set_task(push)
    fresh = family.make_env(push)
    np.testing.assert_array_equal(env.reset(seed=0)[0], fresh.reset(seed=0)[0])
    env.close()
    fresh.close()


def test_ml1_rejects_another_environments_task(ml1):
    push = envs.make("MetaWorldML1", env_name="push-v3", horizon=HORIZON)
    with pytest.raises(ValueError, match="reach-v3"):
        ml1.make_env(push.sample_tasks(1, seed=0)[0])
    with pytest.raises(ValueError, match="env_name"):
        envs.make("MetaWorldML1", env_name="reach-v9")


def test_the_cli_lists_and_checks_the_families():
    run = [sys.executable, "-m", "meta_rl"]
    listed = subprocess.run([*run, "envs"], capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr
    for name in ("MetaWorldML1", "MetaWorldML10", "MetaWorldML45"):
        assert name in listed.stdout
    checked = subprocess.run([*run, "check-env", "MetaWorldML10"], capture_output=True,
                             text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "passed" in checked.stdout


@pytest.mark.slow
def test_training_samples_the_train_split_and_evaluation_the_test_split(tmp_path):
    from meta_rl import TrainConfig, Trainer, evaluate

    config = TrainConfig.from_dict({
        "env": "MetaWorldML1", "env_kwargs": {"env_name": "reach-v3", "horizon": HORIZON},
        "iterations": 1, "meta_batch": 2, "episodes": 2, "hidden": [8],
        "threads": 1, "seed": 3})
    trainer = Trainer(config, tmp_path / "run", progress=False)
    seen = []
    sample = trainer.setup.sampler.sample

    def recording(tasks, *args, **kwargs):
        seen.extend(tasks)
        return sample(tasks, *args, **kwargs)

    trainer.setup.sampler.sample = recording
    try:
        trainer.train()
    finally:
        trainer.close()
    family = envs.make("MetaWorldML1", env_name="reach-v3", horizon=HORIZON)
    train_goals = {t.rand_vec for t in family.split_tasks("train")}
    test_goals = {t.rand_vec for t in family.split_tasks("test")}
    assert seen and {t.rand_vec for t in seen} <= train_goals
    for split, goals in (("test", test_goals), ("train", train_goals)):
        result = evaluate(tmp_path / "run", tasks=3, steps=1, episodes=2, methods="meta",
                          split=split, progress=False)
        assert result.split == split and {t.rand_vec for t in result.tasks} <= goals
        success = result.methods["meta"].success
        assert success is not None and len(success["mean"]) == 2
        assert all(0.0 <= m <= 1.0 for m in success["mean"])
        line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
        assert 0.0 <= line["pre_adapt_success"] <= 1.0


class _StubSawyer:
    def __init__(self, name):
        self.name, self.closed = name, False

    def close(self):
        self.closed = True


def test_the_sawyer_pool_reuses_by_class_and_stays_bounded(monkeypatch):
    """The pool hands back an idle env of the asked class; a miss closes the least recently
    returned idle envs first, so at most factor x the peak in use are ever alive."""
    from envs import metaworld as mw

    built = []
    monkeypatch.setattr(mw, "_build_sawyer", lambda name: built.append(_StubSawyer(name))
                        or built[-1])
    pool = mw.SawyerPool(factor=2)
    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(10)]
    in_use: list = []
    for _ in range(40):  # 40 retaskings of 8 sub-envs drawn from 10 classes
        for env in in_use:
            pool.give(env.name, env, pool.generation)
        in_use = [pool.take(str(c)) for c in rng.choice(classes, 8)]
        assert pool.in_use == 8 and pool.alive <= 2 * pool.peak == 16
        assert all(not env.closed for env in in_use)
    closed = [env for env in built if env.closed]
    assert closed and len(built) - len(closed) == pool.alive
    # a hit returns the same object, without building
    name, env = pool.idle[-1]
    count = len(built)
    assert pool.take(name) is env and len(built) == count
    with pytest.raises(ValueError, match="factor"):
        mw.SawyerPool(factor=0.5)


def test_the_sawyer_pool_closes_the_least_recently_returned_first(monkeypatch):
    from envs import metaworld as mw

    monkeypatch.setattr(mw, "_build_sawyer", _StubSawyer)
    pool = mw.SawyerPool(factor=2)
    a, b = pool.take("a"), pool.take("b")  # peak 2: at most 4 alive
    pool.give("a", a, 0), pool.give("b", b, 0)
    c, d = pool.take("c"), pool.take("d")  # 4 alive, nothing closed yet
    assert not (a.closed or b.closed)
    pool.give("d", d, 0), pool.give("c", c, 0)  # idle, oldest first: a, b, d, c
    e = pool.take("e")
    assert a.closed and not (b.closed or c.closed or d.closed or e.closed) and pool.alive == 4
    pool.take("f")
    assert b.closed and not (c.closed or d.closed)
    # a forked child counts from zero: what it inherited in use is not given back to its count
    pool.forked()
    assert pool.in_use == 0 and pool.peak == 0
    pool.give("e", e, 0)
    assert pool.in_use == 0 and pool.idle[-1] == ("e", e)


def test_a_closed_env_reset_again_runs_its_own_task(ml1):
    """close gives the Sawyer env back; another env may retask it; a later reset of the closed
    env takes one again and gives it its own task."""
    first_task, second_task = ml1.sample_tasks(2, seed=3)
    assert first_task.rand_vec != second_task.rand_vec
    first = ml1.make_env(first_task)
    first.reset(seed=0)
    first.close()
    with pytest.raises(RuntimeError, match="reset"):
        first.step(np.zeros(4, np.float32))
    second = ml1.make_env(second_task)
    second.reset(seed=0)  # reuses the Sawyer env `first` gave back
    second.close()
    fresh = ml1.make_env(first_task)
    np.testing.assert_array_equal(first.reset(seed=0)[0], fresh.reset(seed=0)[0])
    np.testing.assert_array_equal(first.sawyer._target_pos, fresh.sawyer._target_pos)
    first.close(), fresh.close()


def test_an_env_dropped_without_close_is_counted_out(ml1):
    import gc

    from envs.metaworld import POOL

    in_use = POOL.in_use
    env = ml1.make_env(ml1.sample_tasks(1, seed=0)[0])
    env.reset(seed=0)
    assert POOL.in_use == in_use + 1
    del env
    gc.collect()
    assert POOL.in_use == in_use


def test_retasked_envs_give_back_and_take_sawyer_envs_at_reset(ml10):
    """All sub-envs a sampler retasks return their Sawyer envs before any takes one (the take
    happens at reset), so a swap of two classes between two envs builds nothing new."""
    from envs.metaworld import POOL

    reach, push = (next(t for t in ml10.split_tasks("train") if t.env_name == n)
                   for n in ("reach-v3", "push-v3"))
    first, second = ml10.make_env(reach), ml10.make_env(push)
    first.reset(seed=0), second.reset(seed=0)
    sawyers = {id(first.sawyer), id(second.sawyer)}
    first.set_task(push), second.set_task(reach)
    with pytest.raises(RuntimeError, match="reset"):
        first.step(np.zeros(4, np.float32))
    first.reset(seed=0), second.reset(seed=0)
    assert {id(first.sawyer), id(second.sawyer)} == sawyers
    assert "Push" in type(first.sawyer).__name__ and "Reach" in type(second.sawyer).__name__
    alive, in_use = POOL.alive, POOL.in_use
    first.close(), second.close()
    assert POOL.alive == alive and POOL.in_use == in_use - 2
    with pytest.raises(ValueError, match="not a Meta-World v3 environment"):
        ml10.make_env(dataclasses.replace(reach, env_name="no-such-v3"))
