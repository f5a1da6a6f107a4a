"""Policies: batched parameters equal a loop over tasks; closed forms equal torch.distributions."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, Normal, kl_divergence

from meta_rl.config import PolicyConfig
from meta_rl.policies import (
    CategoricalMLPPolicy,
    GaussianMLPPolicy,
    batch_params,
    make_policy,
)


def perturbed(params, T, scale=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: v.unsqueeze(0) + scale * torch.randn(T, *v.shape, generator=g)
            for k, v in params.items()}


@pytest.mark.parametrize("cls,out", [(GaussianMLPPolicy, 2), (CategoricalMLPPolicy, 3)])
def test_batched_forward_equals_loop_over_tasks(cls, out):
    policy = cls(4, out, hidden=(8, 8))
    params = perturbed(policy.init_params(torch.Generator().manual_seed(0)), T=3)
    obs = torch.randn(3, 5, 7, 4)
    batched = policy.dist(params, obs)
    for t in range(3):
        single = policy.dist({k: v[t] for k, v in params.items()}, obs[t])
        torch.testing.assert_close(batched.loc[t], single.loc)
        if single.log_std is not None:
            torch.testing.assert_close(batched.log_std[t], single.log_std)


def test_gaussian_closed_forms_match_torch_distributions():
    policy = GaussianMLPPolicy(3, 2, hidden=(6,), init_std=0.5)
    p = perturbed(policy.init_params(), T=2, seed=1)
    q = perturbed(policy.init_params(), T=2, seed=2)
    obs = torch.randn(2, 4, 3)
    a = torch.randn(2, 4, 2)
    dp, dq = policy.dist(p, obs), policy.dist(q, obs)

    def torch_dist(d):
        return Independent(Normal(d.loc, d.log_std.exp().unsqueeze(1).expand_as(d.loc)), 1)

    torch.testing.assert_close(policy.log_prob(dp, a), torch_dist(dp).log_prob(a))
    torch.testing.assert_close(policy.kl(dp, dq), kl_divergence(torch_dist(dp), torch_dist(dq)))
    torch.testing.assert_close(policy.entropy(dp), torch_dist(dp).entropy())


def test_categorical_closed_forms_match_torch_distributions():
    policy = CategoricalMLPPolicy(3, 4, hidden=(6,))
    p = perturbed(policy.init_params(), T=2, seed=1, scale=0.5)
    q = perturbed(policy.init_params(), T=2, seed=2, scale=0.5)
    obs = torch.randn(2, 5, 3)
    a = torch.randint(0, 4, (2, 5))
    dp, dq = policy.dist(p, obs), policy.dist(q, obs)
    cp, cq = Categorical(logits=dp.loc), Categorical(logits=dq.loc)
    torch.testing.assert_close(policy.log_prob(dp, a), cp.log_prob(a))
    torch.testing.assert_close(policy.kl(dp, dq), kl_divergence(cp, cq))
    torch.testing.assert_close(policy.entropy(dp), cp.entropy())


def test_sampling_is_seeded_and_per_task():
    policy = GaussianMLPPolicy(2, 2, hidden=(4,))
    params = batch_params(policy.init_params(), 3)
    obs = torch.zeros(3, 1000, 2)
    a1 = policy.sample(params, obs, torch.Generator().manual_seed(7))
    a2 = policy.sample(params, obs, torch.Generator().manual_seed(7))
    assert torch.equal(a1, a2) and a1.shape == (3, 1000, 2)
    assert abs(float(a1.std()) - 1.0) < 0.05  # init_std = 1
    cat = CategoricalMLPPolicy(2, 3, hidden=(4,))
    acts = cat.sample(batch_params(cat.init_params(), 2), torch.zeros(2, 3000, 2),
                      torch.Generator().manual_seed(0))
    freq = torch.bincount(acts.flatten(), minlength=3).float() / acts.numel()
    probs = cat.dist(cat.init_params(), torch.zeros(1, 2)).loc.exp().squeeze(0)
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_make_policy_picks_by_action_space_and_rejects_others():
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    assert isinstance(make_policy(box, gym.spaces.Box(-1, 1, (2,), np.float32)), GaussianMLPPolicy)
    assert isinstance(make_policy(box, gym.spaces.Discrete(2)), CategoricalMLPPolicy)
    with pytest.raises(ValueError, match="action space"):
        make_policy(box, gym.spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="hidden"):
        make_policy(box, gym.spaces.Discrete(2), PolicyConfig(hidden=(0,)))
    with pytest.raises(ValueError, match="activation"):
        make_policy(box, gym.spaces.Discrete(2), PolicyConfig(activation="gelu"))


def test_init_params_reproducible_with_generator():
    policy = GaussianMLPPolicy(3, 2)
    a = policy.init_params(torch.Generator().manual_seed(3))
    b = policy.init_params(torch.Generator().manual_seed(3))
    c = policy.init_params(torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layers.0.weight"], c["layers.0.weight"])


def test_gaussian_is_relative_to_the_action_box():
    """Mean and spread scale with the box; log-prob gradients equal those in unit coordinates."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    box = gym.spaces.Box(np.array([-0.1, 1.0], np.float32), np.array([0.1, 3.0], np.float32))
    scaled = make_policy(obs_space, box, PolicyConfig(hidden=(6,), init_std=0.5))
    unit = make_policy(obs_space, gym.spaces.Box(-1, 1, (2,), np.float32),
                       PolicyConfig(hidden=(6,), init_std=0.5))
    params = perturbed(scaled.init_params(torch.Generator().manual_seed(0)), T=2)
    obs = torch.randn(2, 5, 3)
    ds, du = scaled.dist(params, obs), unit.dist(params, obs)
    center, half = torch.tensor([0.0, 2.0]), torch.tensor([0.1, 1.0])
    torch.testing.assert_close(ds.loc, center + half * du.loc)
    torch.testing.assert_close(ds.log_std, du.log_std + half.log())
    # at init (zero output bias) samples are centred in the box with spread init_std * half
    a = scaled.sample(batch_params(scaled.init_params(), 1), torch.zeros(1, 20000, 3),
                      torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.mean((0, 1)), center, atol=0.02, rtol=0)
    torch.testing.assert_close(a.std((0, 1)), 0.5 * half, atol=0.01, rtol=0.03)
    # the same action in both coordinates: equal policy gradients (log-probs differ by a constant)
    u = torch.randn(2, 5, 2)
    grads = []
    for policy, actions in ((scaled, center + half * u), (unit, u)):
        p = {k: v.clone().requires_grad_() for k, v in params.items()}
        grads.append(torch.autograd.grad(policy.log_prob(policy.dist(p, obs), actions).sum(),
                                         list(p.values())))
    for gs, gu in zip(*grads):
        torch.testing.assert_close(gs, gu)


def test_unbounded_box_leaves_the_gaussian_in_env_units():
    obs_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    policy = make_policy(obs_space, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    plain = GaussianMLPPolicy(3, 2)
    params = policy.init_params(torch.Generator().manual_seed(0))
    obs = torch.randn(4, 3)
    torch.testing.assert_close(policy.dist(params, obs).loc, plain.dist(params, obs).loc)
    torch.testing.assert_close(policy.dist(params, obs).log_std, plain.log_std.detach())


def sparse_mask(T=3, E=6, H=5, seed=0):
    """Episodes of 0..3 steps (then padding), as a "steps" batch with short episodes gives."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (T, E), generator=g)
    return (torch.arange(H) < lengths.unsqueeze(-1)).float()


@pytest.mark.parametrize("cls,out", [(GaussianMLPPolicy, 2), (CategoricalMLPPolicy, 3)])
def test_a_mask_skips_padding_and_keeps_every_step_and_gradient(cls, out):
    policy = cls(4, out, hidden=(8, 8))
    params = perturbed(policy.init_params(torch.Generator().manual_seed(0)), T=3)
    params = {k: v.requires_grad_() for k, v in params.items()}
    obs, mask = torch.randn(3, 6, 5, 4), sparse_mask()
    seen = []
    body = policy.body
    policy.body = lambda x: seen.append(x.shape[:-1].numel()) or body(x)
    packed = policy.dist(params, obs, mask)
    full = policy.dist(params, obs)
    # the MLP ran on each task's steps only (as many rows as the fullest task), not the padding
    assert seen[0] == 3 * int(mask.flatten(1).sum(1).max()) < seen[1] == obs.shape[:-1].numel()
    on = mask.bool()
    torch.testing.assert_close(packed.loc[on], full.loc[on])
    weights = torch.randn(3, 6, 5)
    mlp = [v for k, v in params.items() if k != "log_std"]
    grads = [torch.autograd.grad((d.loc.sum(-1) * weights * mask).sum(), mlp)
             for d in (packed, full)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_a_mask_that_is_mostly_full_takes_the_plain_path():
    policy = GaussianMLPPolicy(4, 2, hidden=(8,))
    obs, mask = torch.randn(2, 3, 5, 4), torch.ones(2, 3, 5)
    mask[0, 0, 3:] = 0
    seen = []
    body = policy.body
    policy.body = lambda x: seen.append(x.shape[:-1].numel()) or body(x)
    torch.testing.assert_close(policy.dist(policy.init_params(), obs, mask).loc,
                               policy.dist(policy.init_params(), obs).loc, rtol=0, atol=0)
    assert seen == [30, 30]  # every row, padding included: packing would not pay


def test_a_mask_with_empty_tasks_packs_and_keeps_the_others():
    policy = CategoricalMLPPolicy(4, 3, hidden=(8,))
    obs, mask = torch.randn(3, 4, 5, 4), torch.zeros(3, 4, 5)
    mask[1, 0, :2] = 1  # one task with two steps, two tasks with none
    packed, full = policy.dist(policy.init_params(), obs, mask), policy.dist(policy.init_params(), obs)
    torch.testing.assert_close(packed.loc[mask.bool()], full.loc[mask.bool()])
    mask[1] = 0  # no step at all
    assert torch.isfinite(policy.dist(policy.init_params(), obs, mask).loc).all()
