"""Batched families equal Gymnasium step for step: their own views and Gymnasium's originals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.pendulum import PendulumEnv

import envs
from envs.batched import seeded_uniform, uniform_tasks

BATCHED = [name for name in envs.names() if envs.make(name).batched]
T, E = 3, 2


def _actions(family, gen):
    space = family.action_space
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (T, E), generator=gen)
    high = torch.as_tensor(space.high)
    # 1.5x the box, so that clipping is exercised too
    return (torch.rand((T, E, *space.shape), generator=gen) * 3 - 1.5) * high


@pytest.mark.parametrize("name", BATCHED)
def test_batched_equals_its_gym_env_step_for_step(name):
    family = envs.make(name)
    tasks = family.sample_tasks(T, seed=1)
    batched = family.make_batched(tasks, E)
    views = [family.make_env(task) for task in tasks for _ in range(E)]
    obs = batched.reset(seed=10).view(T * E, -1)
    for i, view in enumerate(views):  # copy i starts where the view reset with seed 10 + i does
        np.testing.assert_array_equal(view.reset(seed=10 + i)[0], obs[i].numpy())
    gen = torch.Generator().manual_seed(0)
    alive = np.ones(T * E, bool)
    for _ in range(family.horizon):
        actions = _actions(family, gen)
        flat = actions.reshape(T * E, *actions.shape[2:])
        obs, reward, terminated, truncated = (
            x.reshape(T * E, *x.shape[2:]) for x in batched.step(actions)
        )
        for i, view in enumerate(views):
            if not alive[i]:
                continue
            action = int(flat[i]) if flat[i].dim() == 0 else flat[i].numpy()
            v_obs, v_rew, v_term, v_trunc, _ = view.step(action)
            np.testing.assert_allclose(v_obs, obs[i].numpy(), rtol=1e-6, atol=1e-6)
            assert v_rew == pytest.approx(float(reward[i]), rel=1e-6, abs=1e-6)
            assert (v_term, v_trunc) == (bool(terminated[i]), bool(truncated[i]))
            alive[i] = not (v_term or v_trunc)
        if not alive.any():
            break
    assert not alive.any()


def _against_gymnasium(family, make_original, set_state, get_state, actions_of, tol):
    tasks = family.sample_tasks(T, seed=2)
    batched = family.make_batched(tasks, E)
    batched.reset(seed=3)
    originals = []
    for t, task in enumerate(tasks):
        for e in range(E):
            env = make_original(task)
            env.reset(seed=0)
            set_state(env, get_state(batched, t, e))
            originals.append(env)
    rng = np.random.default_rng(0)
    alive = np.ones(T * E, bool)
    steps = 0
    for _ in range(family.horizon):
        actions = actions_of(rng)
        obs, reward, terminated, _ = batched.step(actions)
        flat = actions.reshape(T * E, *actions.shape[2:])
        for i, env in enumerate(originals):
            if not alive[i]:
                continue
            action = int(flat[i]) if flat[i].dim() == 0 else flat[i].numpy()
            g_obs, g_rew, g_term, _, _ = env.step(action)
            t, e = divmod(i, E)
            np.testing.assert_allclose(obs[t, e].numpy(), g_obs, atol=tol)
            assert float(reward[t, e]) == pytest.approx(g_rew, abs=tol)
            assert bool(terminated[t, e]) == g_term
            alive[i] = not g_term
        steps += 1
        if not alive.any():
            break
    return steps


def test_pendulum_equals_gymnasium_pendulum():
    family = envs.make("PendulumDynamics")

    def make(task):
        env = PendulumEnv(g=task.gravity)
        env.m, env.l = task.mass, task.length
        return env

    def set_state(env, state):
        env.state = np.asarray(state, dtype=np.float64)

    def get_state(b, t, e):
        return [float(b.theta[t, e]), float(b.theta_dot[t, e])]

    def actions(rng):  # beyond the torque limit too
        return torch.from_numpy(rng.uniform(-3, 3, (T, E, 1)).astype(np.float32))

    # float32 here vs float64 there, over the whole 200-step episode
    assert _against_gymnasium(family, make, set_state, get_state, actions, tol=2e-3) == 200


def test_cartpole_equals_gymnasium_cartpole():
    family = envs.make("CartPoleDynamics")

    def make(task):
        env = CartPoleEnv()
        env.length, env.masspole, env.force_mag = task.pole_length, task.pole_mass, task.force_mag
        env.total_mass = env.masspole + env.masscart
        env.polemass_length = env.masspole * env.length
        return env

    def set_state(env, state):
        env.state = np.asarray(state, dtype=np.float64)

    def get_state(b, t, e):
        return b.state[t, e].double().numpy()

    def actions(rng):
        return torch.from_numpy(rng.integers(0, 2, (T, E)))

    assert _against_gymnasium(family, make, set_state, get_state, actions, tol=1e-5) > 5


def test_seeded_uniform_convention_and_range():
    a = seeded_uniform(7, 3, 4, [-1.0, 0.0], [1.0, 10.0])
    assert a.shape == (3, 4, 2) and a.dtype == torch.float32
    flat = a.view(12, 2)
    for i in range(12):  # copy i of seed 7 is copy 0 of seed 7 + i
        torch.testing.assert_close(seeded_uniform(7 + i, 1, 1, [-1.0, 0.0], [1.0, 10.0])[0, 0], flat[i])
    assert (a[..., 0] >= -1).all() and (a[..., 0] < 1).all() and (a[..., 1] >= 0).all()
    big = seeded_uniform(0, 100, 100, [0.0], [1.0]).flatten()
    assert abs(big.mean().item() - 0.5) < 0.01 and abs(big.var().item() - 1 / 12) < 0.005
    assert not torch.equal(seeded_uniform(1, 2, 2, [0.0], [1.0]), seeded_uniform(2, 2, 2, [0.0], [1.0]))


@pytest.mark.parametrize("name", ["CartPoleDynamics", "PendulumDynamics"])
def test_uniform_tasks_draw_each_field_from_its_range(name):
    family = envs.make(name)
    tasks = uniform_tasks(family, 500, seed=3)
    assert tasks == family.sample_tasks(500, seed=3) and tasks != uniform_tasks(family, 500, 4)
    # the documented draw order, field by field, which fixes every published task set
    rng = np.random.default_rng(3)
    for field, (lo, hi) in family.ranges.items():
        values = np.array([getattr(task, field) for task in tasks])
        np.testing.assert_array_equal(values, rng.uniform(lo, hi, 500))
        assert lo <= values.min() and values.max() < hi
    columns = np.array([[getattr(task, f) for f in family.ranges] for task in tasks])
    corr = np.corrcoef(columns.T)  # fields are drawn independently
    assert np.abs(corr - np.eye(len(family.ranges))).max() < 0.15


@pytest.mark.parametrize("ranges, match", [
    ({"mass": (0.5, 1.5), "length": (0.5, 1.5)}, r"ranges must map each field.*gravity"),
    ([(0.5, 1.5)] * 3, r"ranges must map each field"),
    ({"mass": 1.0, "length": (0.5, 1.5), "gravity": (8, 12)}, r"ranges\['mass'\] must be \(low"),
    ({"mass": (1.5, 0.5), "length": (0.5, 1.5), "gravity": (8, 12)}, r"finite low < high, got \(1.5"),
    ({"mass": (0, 1), "length": (0, float("inf")), "gravity": (8, 12)}, r"ranges\['length'\]"),
    ({"mass": (0, 1, 2), "length": (0, 1), "gravity": (8, 12)}, r"ranges\['mass'\]"),
])
def test_uniform_tasks_rejects_bad_ranges(ranges, match):
    family = envs.make("PendulumDynamics")
    family.ranges = ranges  # on the instance only
    with pytest.raises(ValueError, match=match):
        uniform_tasks(family, 2, seed=0)


@pytest.mark.parametrize("name", BATCHED)
def test_batched_rejects_bad_input(name):
    family = envs.make(name)
    tasks = family.sample_tasks(2, seed=0)
    env = family.make_batched(tasks, 3)
    env.reset(seed=0)
    discrete = isinstance(family.action_space, gym.spaces.Discrete)
    shape = (2, 3) if discrete else (2, 3, *family.action_space.shape)
    dtype = torch.int64 if discrete else torch.float32
    wrong_shape = (2, 4) if discrete else (2, 3, family.action_space.shape[0] + 1)
    with pytest.raises(ValueError, match=r"shape \[2, 3.*got shape \[2, [34]"):
        env.step(torch.zeros(wrong_shape, dtype=dtype))
    with pytest.raises(ValueError, match="device meta"):
        env.step(torch.zeros(shape, dtype=dtype, device="meta"))
    with pytest.raises(ValueError, match="dtype"):
        env.step(torch.zeros(shape, dtype=torch.float32 if discrete else torch.int64))
    with pytest.raises(ValueError, match="torch.Tensor"):
        env.step(np.zeros(shape))
    with pytest.raises(ValueError, match="envs_per_task must be a positive int"):
        family.make_batched(tasks, 0)
    with pytest.raises(ValueError, match="number of tasks must be a positive int"):
        family.make_batched([], 2)
    other = envs.AntVelTask(1.0) if name == "Navigation2D" else envs.NavigationTask(0.0, 0.0)
    with pytest.raises(ValueError, match="expects a"):
        family.make_batched([tasks[0], other], 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", BATCHED)
def test_batched_on_cuda_matches_cpu(name):
    family = envs.make(name)
    tasks = family.sample_tasks(T, seed=0)
    cpu, gpu = family.make_batched(tasks, E, "cpu"), family.make_batched(tasks, E, "cuda")
    torch.testing.assert_close(cpu.reset(seed=1), gpu.reset(seed=1).cpu())
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        actions = _actions(family, gen)
        for x, y in zip(cpu.step(actions), gpu.step(actions.cuda())):
            assert y.device.type == "cuda"
            torch.testing.assert_close(x, y.cpu(), rtol=1e-4, atol=1e-4)
