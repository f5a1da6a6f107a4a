"""Returns, GAE and the linear baseline against answers worked out by hand or by a plain loop."""

import pytest
import torch

from meta_rl.returns import (
    LinearFeatureBaseline,
    compute_advantages,
    discounted_returns,
    gae,
    normalize_per_task,
)
from tests.conftest import synthetic_episodes


def loop_gae(rewards, values, mask, terminated, truncated, last_value, gamma, lam):
    """Reference GAE: one episode at a time, backwards, in plain Python."""
    T, E, H = rewards.shape
    out = torch.zeros_like(rewards)
    for t in range(T):
        for e in range(E):
            length = int(mask[t, e].sum())
            adv = 0.0
            for k in reversed(range(length)):
                if k == length - 1:
                    nxt = 0.0 if terminated[t, e, k] else float(last_value[t, e])
                else:
                    nxt = float(values[t, e, k + 1])
                delta = float(rewards[t, e, k]) + gamma * nxt - float(values[t, e, k])
                adv = delta + gamma * lam * adv
                out[t, e, k] = adv
    return out


@pytest.mark.parametrize("gamma,lam", [(0.99, 1.0), (0.9, 0.95), (1.0, 0.0)])
def test_vectorised_gae_equals_loop(gamma, lam):
    ep = synthetic_episodes(T=3, E=4, H=7, seed=1)
    values = torch.randn(ep.rewards.shape, dtype=torch.float64) * ep.mask
    last_value = torch.randn(ep.rewards.shape[:2], dtype=torch.float64)
    fast = gae(ep.rewards, values, ep.mask, ep.terminated, ep.truncated, last_value, gamma, lam)
    slow = loop_gae(ep.rewards, values, ep.mask, ep.terminated, ep.truncated, last_value, gamma, lam)
    torch.testing.assert_close(fast, slow)


def test_constant_value_gae_by_hand():
    # One truncated episode of 3 steps, rewards 1, V = 2 everywhere, bootstrap V = 2.
    r = torch.ones(1, 1, 3, dtype=torch.float64)
    v = torch.full_like(r, 2.0)
    mask = torch.ones_like(r)
    term = torch.zeros_like(r, dtype=torch.bool)
    trunc = torch.tensor([[[False, False, True]]])
    g, lam = 0.5, 1.0
    adv = gae(r, v, mask, term, trunc, torch.full((1, 1), 2.0, dtype=torch.float64), g, lam)
    # delta_t = 1 + 0.5*2 - 2 = 0 for all steps, so every advantage is 0.
    torch.testing.assert_close(adv, torch.zeros_like(r))
    # Terminated instead: delta_2 = 1 - 2 = -1, delta_1 = delta_0 = 0 -> A = [-0.25, -0.5, -1].
    adv = gae(r, v, mask, trunc, term, torch.full((1, 1), 2.0, dtype=torch.float64), g, lam)
    torch.testing.assert_close(adv, torch.tensor([[[-0.25, -0.5, -1.0]]], dtype=torch.float64))


def test_discounted_returns_by_hand_and_truncation_bootstrap():
    r = torch.tensor([[[1.0, 2.0, 3.0, 0.0]]], dtype=torch.float64)
    mask = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]], dtype=torch.float64)
    trunc = torch.tensor([[[False, False, True, False]]])
    g = discounted_returns(r, mask, 0.5)
    torch.testing.assert_close(g, torch.tensor([[[2.75, 3.5, 3.0, 0.0]]], dtype=torch.float64))
    g = discounted_returns(r, mask, 0.5, trunc, torch.tensor([[4.0]], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([[[3.25, 4.5, 5.0, 0.0]]], dtype=torch.float64))


def test_linear_baseline_fits_linear_target_exactly():
    ep = synthetic_episodes(T=3, E=6, H=8, O=2, seed=2, dtype=torch.float32)
    base = LinearFeatureBaseline(reg=1e-10)
    steps = torch.arange(8).expand(ep.mask.shape)
    feats = base.features(ep.obs, steps)
    true_w = torch.randn(3, feats.shape[-1])
    target = (feats @ true_w.unsqueeze(1).unsqueeze(-1)).squeeze(-1) * ep.mask
    w = base.fit(ep.obs, ep.mask, target)
    pred = base.predict(w, ep.obs, steps) * ep.mask
    torch.testing.assert_close(pred, target, atol=1e-3, rtol=1e-3)


def test_advantages_normalised_per_task():
    ep = synthetic_episodes(T=2, E=5, H=6, seed=3, dtype=torch.float32)
    adv = compute_advantages(ep)
    for t in range(2):
        a = adv[t][ep.mask[t] > 0]
        assert abs(float(a.mean())) < 1e-5 and abs(float(a.std(unbiased=False)) - 1) < 1e-3
    assert float((adv * (1 - ep.mask)).abs().sum()) == 0.0


def test_shape_errors_name_the_shapes():
    r = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\[T, E, H\]"):
        discounted_returns(r, torch.zeros(2, 3, 5), 0.9)
    with pytest.raises(ValueError, match="last_value"):
        gae(r, r, r, r.bool(), r.bool(), torch.zeros(3), 0.9, 0.9)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(r, r, 1.5)
    with pytest.raises(ValueError, match="obs"):
        LinearFeatureBaseline().fit(torch.zeros(2, 3, 4), r, r)


def test_normalize_ignores_padding():
    x = torch.tensor([[[1.0, 3.0, 100.0]]])
    m = torch.tensor([[[1.0, 1.0, 0.0]]])
    torch.testing.assert_close(normalize_per_task(x, m), torch.tensor([[[-1.0, 1.0, 0.0]]]), atol=1e-6, rtol=0)
