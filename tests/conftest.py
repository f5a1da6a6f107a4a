"""Shared fixtures: synthetic episodes for tests that need fixed data, not an env."""

from __future__ import annotations

import pytest
import torch

from meta_rl.episodes import Episodes


def synthetic_episodes(T=2, E=3, H=5, O=3, A=2, discrete=False, dtype=torch.float64, seed=0,
                       ragged=True) -> Episodes:
    """Random episodes ``[T, E, H]``; with ``ragged`` some end early (terminated) and the rest
    are truncated at the horizon."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(T, E, H, O, generator=g, dtype=dtype)
    if discrete:
        actions = torch.randint(0, A, (T, E, H), generator=g)
    else:
        actions = torch.randn(T, E, H, A, generator=g, dtype=dtype)
    rewards = torch.randn(T, E, H, generator=g, dtype=dtype)
    lengths = torch.randint(2, H + 1, (T, E), generator=g) if ragged else torch.full((T, E), H)
    steps = torch.arange(H).expand(T, E, H)
    mask = (steps < lengths.unsqueeze(-1)).to(dtype)
    last = steps == (lengths.unsqueeze(-1) - 1)
    terminated = last & (lengths.unsqueeze(-1) < H)
    truncated = last & ~terminated
    last_obs = torch.randn(T, E, O, generator=g, dtype=dtype)
    return Episodes(obs, actions, rewards * mask, mask, terminated, truncated, last_obs)


@pytest.fixture
def episodes_factory():
    return synthetic_episodes
