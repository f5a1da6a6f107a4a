"""Success as a metric (any family whose envs' ``info`` carries ``success``) and task splits."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from meta_rl.config import PolicyConfig, SamplingConfig
from meta_rl.policies import batch_params, make_policy
from meta_rl.sampling import make_sampler
from tests.faulty import Faulty

HORIZON = 5


class _Reports(gym.Wrapper):
    """An env reporting success at one step of episodes reset with an even seed."""

    def reset(self, *, seed=None, options=None):
        self.succeeds_at = None if seed % 2 else 2 + seed % 3
        self.t = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        return obs, reward, terminated, truncated, {**info, "success": self.t == self.succeeds_at}


class ReportsSuccess(Faulty):
    """A well-behaved worker-sampled family (``tests.faulty``) whose envs report
    ``info["success"]``."""

    def make_env(self, task):
        return _Reports(super().make_env(task))


def _sample(family, seed=7, T=3, E=4, workers=2):
    policy = make_policy(family.observation_space, family.action_space, PolicyConfig(hidden=(8,)))
    params = batch_params(policy.init_params(torch.Generator().manual_seed(0)), T)
    sampler = make_sampler(family, policy, SamplingConfig(meta_batch=T, episodes=E),
                           num_workers=workers)
    try:
        return sampler.sample(family.sample_tasks(T, seed=0), params, seed)
    finally:
        sampler.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_success_is_recorded_when_reported_at_any_step(workers):
    family = ReportsSuccess(horizon=HORIZON)
    episodes = _sample(family, seed=7, workers=workers)
    T, E = episodes.num_tasks, episodes.episodes_per_task
    # sub-env t*E + e is reset with seed 7 + t*E + e: even seeds succeed once, odd ones never
    expected = torch.tensor([[(7 + t * E + e) % 2 == 0 for e in range(E)] for t in range(T)])
    assert episodes.success is not None and torch.equal(episodes.success.cpu(), expected)
    assert torch.allclose(episodes.task_success(), expected.double().mean(1).to(
        episodes.task_success().dtype))


def test_success_at_a_step_past_the_horizon_is_not_counted():
    family = ReportsSuccess(horizon=2)  # only the episodes that succeed at step 2 succeed
    episodes = _sample(family, seed=7)
    T, E = episodes.num_tasks, episodes.episodes_per_task
    expected = torch.tensor([[(7 + t * E + e) % 6 == 0 for e in range(E)] for t in range(T)])
    assert torch.equal(episodes.success.cpu(), expected)


def test_families_without_success_record_none():
    assert _sample(envs.make("Navigation2D")).success is None  # batched
    assert _sample(envs.make("PendulumDynamics", horizon=HORIZON)).success is None  # workers


def test_default_split_is_the_one_distribution():
    family = envs.make("Navigation2D")
    assert family.sample_split(5, 3, "test") == family.sample_tasks(5, 3)
    with pytest.raises(ValueError, match="split"):
        family.sample_split(5, 3, "validation")
