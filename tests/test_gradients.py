"""Meta-gradients through the public API (``meta_objective``, ``MetaBatch``, the inner rules),
in float64 on fixed episodes, against central finite differences; TRPO's curvature products
against exact Hessians of the mean KL."""

import math

import pytest
import torch

from meta_rl import (FixedStep, LearnedRates, MetaBatch, MetaObjective, ReptileStep,
                     meta_objective, replay)
from meta_rl.distributed import SINGLE
from meta_rl.inner import inner_loss
from meta_rl.objective import flat, step_index, unflat
from meta_rl.policies import CategoricalMLPPolicy, Dist, GaussianMLPPolicy
from tests.conftest import synthetic_episodes

T, E, H, O, A = 2, 3, 5, 3, 2


def make_problem(steps: int, discrete=False, seed=0):
    """A float64 policy, its parameters, and ``steps + 1`` batches of fixed episodes with random
    advantages (the last is the validation batch)."""
    torch.manual_seed(seed)
    if discrete:
        policy = CategoricalMLPPolicy(O, 3, hidden=(5,), activation="tanh").double()
    else:
        policy = GaussianMLPPolicy(O, A, hidden=(5,), activation="tanh", init_std=0.7).double()
    params = {k: v.detach().clone().double() for k, v in policy.named_parameters()}
    n_act = 3 if discrete else A
    eps = [synthetic_episodes(T, E, H, O, n_act, discrete, seed=seed + k) for k in range(steps + 1)]
    g = torch.Generator().manual_seed(seed + 100)
    advs = [torch.randn(e.rewards.shape, generator=g, dtype=torch.float64) * e.mask for e in eps]
    return policy, params, eps, advs


def batch_of(eps, advs) -> MetaBatch:
    return MetaBatch(eps[:-1], advs[:-1], eps[-1], advs[-1])


def rates_for(params, seed=7):
    g = torch.Generator().manual_seed(seed)
    return {"lr/" + k: 0.2 + 0.05 * torch.rand(v.shape, generator=g, dtype=v.dtype)
            for k, v in params.items()}


def finite_difference(f, meta: dict, eps=1e-6) -> dict:
    """Central differences of the scalar ``f()`` w.r.t. every element of ``meta`` (in place)."""
    grads = {}
    for name, t in meta.items():
        g = torch.zeros_like(t)
        for i in range(t.numel()):
            old = t.view(-1)[i].item()
            t.view(-1)[i] = old + eps
            up = float(f())
            t.view(-1)[i] = old - eps
            down = float(f())
            t.view(-1)[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads[name] = g
    return grads


def check_meta_gradient(policy, rule, meta, batch, eps=1e-6, rtol=1e-5, atol=1e-7):
    """The autograd meta-gradient of the public surrogate equals central finite differences
    (the sampling policy's log-probabilities held at ``meta``'s, as the surrogate defines)."""
    old = MetaObjective(policy, rule, meta, batch).old_log_prob
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    loss = meta_objective(policy, rule, leaves, batch, old_log_prob=old)
    auto = torch.autograd.grad(loss, list(leaves.values()))
    fd = finite_difference(
        lambda: meta_objective(policy, rule, meta, batch, old_log_prob=old).detach(), meta, eps)
    assert any(float(a.abs().max()) > 1e-3 for a in auto)  # a gradient worth checking
    for a, name in zip(auto, meta):
        torch.testing.assert_close(a, fd[name], rtol=rtol, atol=atol)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_maml_meta_gradient_matches_finite_differences(steps, discrete):
    policy, params, eps, advs = make_problem(steps, discrete)
    check_meta_gradient(policy, FixedStep(0.3), params, batch_of(eps, advs))


@pytest.mark.parametrize("steps", [1, 2])
def test_metasgd_meta_gradient_matches_finite_differences(steps):
    """Meta-SGD's rates are meta-parameters like the policy's: one gradient covers both."""
    policy, params, eps, advs = make_problem(steps)
    rule = LearnedRates(0.2)
    meta = {**params, **rates_for(params)}
    assert set(rule.init(params)) == set(meta) - set(params)
    check_meta_gradient(policy, rule, meta, batch_of(eps, advs))


def test_first_order_gradient_is_gradient_at_adapted_params():
    policy, params, eps, advs = make_problem(1)
    batch = batch_of(eps, advs)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    first = MetaObjective(policy, FixedStep(0.3, first_order=True), leaves, batch)
    fo = torch.autograd.grad(first.surrogate(), list(leaves.values()))
    # The surrogate with the adapted parameters as free leaves, gradients summed over tasks.
    at = {k: v.detach().clone().requires_grad_() for k, v in first.adapted.items()}
    direct = torch.autograd.grad(first.loss_kl(at)[0], list(at.values()))
    for a, d in zip(fo, direct):
        torch.testing.assert_close(a, d.sum(0))
    # and it differs from the second-order gradient (the test can fail)
    so = torch.autograd.grad(meta_objective(policy, FixedStep(0.3), leaves, batch),
                             list(leaves.values()))
    assert any(not torch.allclose(a, b) for a, b in zip(fo, so))


def test_replay_is_the_inner_loss_step():
    """One replayed step is ``theta - lr * grad`` of each task's own inner loss."""
    policy, params, eps, advs = make_problem(1)
    adapted = replay(policy, FixedStep(0.3), params, eps[:1], advs[:1])
    for t in range(T):
        one = {k: v.clone().requires_grad_() for k, v in params.items()}
        ep = eps[0].map(lambda x: x[t:t + 1])
        grads = torch.autograd.grad(inner_loss(policy, one, ep, advs[0][t:t + 1]).sum(),
                                    list(one.values()))
        for (k, v), g in zip(params.items(), grads):
            torch.testing.assert_close(adapted[k][t], v - 0.3 * g)


def test_reptile_step_is_epsilon_times_displacement_for_one_task():
    policy = GaussianMLPPolicy(O, A, hidden=(5,)).double()
    meta = {k: v.detach().clone().double().requires_grad_() for k, v in policy.named_parameters()}
    before = {k: v.detach().clone() for k, v in meta.items()}
    adapted = {k: (v + torch.randn_like(v)).unsqueeze(0) for k, v in before.items()}

    class Displacement:  # all a Reptile step reads of the meta-batch
        shard, num_tasks = SINGLE, 1

    batch = Displacement()
    batch.adapted = adapted
    ReptileStep(meta, lr=0.25).step(batch)
    for k in before:
        torch.testing.assert_close(meta[k].detach(), before[k] + 0.25 * (adapted[k][0] - before[k]))


def make_objective(steps: int, discrete: bool, metasgd: bool, seed: int = 0):
    """A MetaObjective after ``steps`` inner steps (MAML, or Meta-SGD with learned rates)."""
    policy, params, eps, advs = make_problem(steps, discrete, seed)
    rule = LearnedRates(0.2) if metasgd else FixedStep(0.3)
    meta = {**params, **(rates_for(params, seed + 7) if metasgd else {})}
    meta = {k: v.requires_grad_() for k, v in meta.items()}
    return policy, meta, MetaObjective(policy, rule, meta, batch_of(eps, advs)), eps[-1]


def exact_hessian_product(f, meta: dict, v):
    values = list(meta.values())
    g = flat(torch.autograd.grad(f(meta), values, create_graph=True))
    return flat(torch.autograd.grad(g @ v, values))


def kl_after_replay(obj):
    return lambda values: obj.loss_kl(obj.replay(values, graph=True))[1]


@pytest.mark.parametrize("metasgd", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_curvature_product_equals_exact_kl_hessian(discrete, steps, metasgd):
    """The product TRPO's CG uses (graph shared with the meta-gradient) is the exact Hessian of
    the mean KL through 1 or 2 inner steps, w.r.t. the initial parameters and Meta-SGD's rates."""
    policy, meta, obj, valid = make_objective(steps, discrete, metasgd)
    keys = list(meta)
    # the meta-gradient first, as TRPO does: the products reuse its graph
    _, grads = obj.gradient(retain_graph=True)
    fresh = torch.autograd.grad(obj.loss_kl(obj.replay(meta, graph=True))[0], list(meta.values()))
    for a, b in zip(grads.values(), fresh):
        torch.testing.assert_close(a, b)
    hvp = obj.fisher_hvp(keys, 1.0, damping=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # the same graph serves every CG iteration
        v = torch.randn(sum(p.numel() for p in meta.values()), generator=g, dtype=torch.float64)
        exact = exact_hessian_product(kl_after_replay(obj), meta, v)
        torch.testing.assert_close(hvp(v), exact, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(obj.fisher_hvp(keys, 1.0, damping=0.5)(v), exact + 0.5 * v,
                                   rtol=1e-6, atol=1e-9)


def test_curvature_over_some_keys_holds_the_others_fixed():
    """A product over the policy's keys alone (Meta-SGD's rates with their own optimiser) is the
    exact Hessian w.r.t. those keys, the rates held at their values."""
    policy, meta, obj, valid = make_objective(1, False, True)
    keys = [k for k in meta if not k.startswith("lr/")]
    part = {k: meta[k] for k in keys}
    obj.gradient(retain_graph=True)
    v = torch.randn(sum(meta[k].numel() for k in keys), dtype=torch.float64)
    exact = exact_hessian_product(kl_after_replay(obj), part, v)
    torch.testing.assert_close(obj.fisher_hvp(keys, 1.0, 0.0)(v), exact, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("metasgd", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_subsampled_curvature_is_exact_hessian_of_subsample_at_adapted_params(
        discrete, steps, metasgd):
    """fisher_fraction < 1: the product is the exact KL Hessian on a subsample of time steps,
    with the derivative of the replay on the same steps of the inner-loop episodes but the
    Fisher at the exact adapted policy (the one that sampled the validation episodes)."""
    policy, meta, obj, valid = make_objective(steps, discrete, metasgd)
    index = step_index(H, 0.5)
    assert index.tolist() == [0, 1, 3]  # ceil(0.5 * H) steps, evenly spaced
    sub0 = {k: t.detach() for k, t in obj.replay({k: m.detach() for k, m in meta.items()},
                                                 0.5).items()}
    old = Dist(obj.old.loc[:, :, index], obj.old.log_std)
    mask = valid.mask[:, :, index]
    weights = mask / (mask.sum((1, 2), keepdim=True) * T)

    def kl_sub(values):
        sub = obj.replay(values, 0.5, graph=True)
        at = {k: obj.adapted[k].detach() + (sub[k] - sub0[k]) for k in sub}
        return (policy.kl(old, policy.dist(at, valid.obs[:, :, index])) * weights).sum()

    keys = list(meta)
    v = torch.randn(sum(p.numel() for p in meta.values()), dtype=torch.float64)
    got = obj.fisher_hvp(keys, 0.5, damping=0.0)(v)
    torch.testing.assert_close(got, exact_hessian_product(kl_sub, meta, v), rtol=1e-6, atol=1e-9)
    # an estimate, not the full-data Hessian (the test can fail)
    assert not torch.allclose(got, obj.fisher_hvp(keys, 1.0, damping=0.0)(v))
    # positive semi-definite, as J^T F J is
    assert float(v @ got) >= 0


def test_curvature_subsample_is_evenly_spaced_steps_of_every_episode():
    assert step_index(100, 0.2).tolist() == list(range(0, 100, 5))
    assert step_index(100, 1.0) is None and step_index(5, 0.9) is None  # ceil(4.5) = 5: all
    assert step_index(3, 0.01).tolist() == [0]
    assert step_index(200, 0.3).tolist()[:4] == [0, 3, 6, 10]
    policy, params, eps, advs = make_problem(1)
    batch = batch_of(eps, advs)
    sub = batch.subsample(0.5)
    index = step_index(H, 0.5)
    ep = sub.episodes[0]
    assert ep.obs.shape == (T, E, 3, O) and torch.equal(ep.last_obs, eps[0].last_obs)
    for got, full in zip(ep[:6], eps[0][:6]):
        assert torch.equal(got, full[:, :, index])
    assert torch.equal(sub.advantages[0], advs[0][:, :, index])
    assert sub.valid is batch.valid
    assert batch.subsample(1.0).episodes[0] is eps[0]


def padded(ep, adv, rows: int):
    """``ep`` and ``adv`` with ``rows`` all-padding rows per task (mask 0), as a "steps" batch
    pads tasks that hold fewer episodes than the fullest one."""
    def pad(x):
        return torch.cat([x, x.new_zeros((x.shape[0], rows, *x.shape[2:]))], 1)
    return ep.map(pad), pad(adv)


@pytest.mark.parametrize("discrete", [False, True])
def test_padding_rows_change_no_meta_gradient_or_curvature_product(discrete):
    """With 3x as many padding rows as episodes, the policy skips the padding (the mask makes
    :meth:`~meta_rl.policies.MLPPolicy.dist` pack the steps); the inner step, the surrogate, its
    meta-gradient and the curvature products are those of the unpadded batch."""
    policy, params, eps, advs = make_problem(1, discrete)
    results = []
    for extra in (0, 3 * E):
        pairs = [padded(ep, adv, extra) for ep, adv in zip(eps, advs)]
        batch = MetaBatch([pairs[0][0]], [pairs[0][1]], *pairs[1])
        meta = {k: v.clone().requires_grad_() for k, v in params.items()}
        rows = []
        body = policy.body
        policy.body = lambda x: rows.append(x.shape[:-1].numel()) or body(x)
        try:
            obj = MetaObjective(policy, FixedStep(0.3), meta, batch)
            surrogate, grads = obj.gradient(retain_graph=True)
            grad = flat(list(grads.values()))
            v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
            hvp = obj.fisher_hvp(list(meta), 1.0, 0.0)(v)
            sub_hvp = obj.fisher_hvp(list(meta), 0.5, 0.0)(v)  # curvature on a subsample
            at = obj.at({k: m.detach() for k, m in meta.items()})  # the line search's
        finally:
            policy.body = body
        results.append((surrogate.detach(), grad, hvp, sub_hvp, torch.tensor(at), max(rows)))
    *plain, _ = results[0]
    *padded_, rows = results[1]
    for a, b in zip(padded_, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert rows <= T * E * H  # no forward pass ran over the padding rows


def test_unflat_inverts_flat():
    policy, params, eps, advs = make_problem(1)
    values = list(params.values())
    for a, b in zip(unflat(flat(values), values), values):
        assert torch.equal(a, b)


def sharpened_problem():
    """A float64 Gaussian policy with a small spread (a sharpened policy, std 0.02) and large
    advantages: a plain step of size 1 moves it enormously."""
    policy, params, eps, advs = make_problem(1, seed=3)
    params = {**params, "log_std": torch.full_like(params["log_std"], math.log(0.02))}
    return policy, params, eps, [10 * a for a in advs]


def test_a_bounded_step_stays_within_its_kl_bound_where_the_plain_step_blows_up():
    from meta_rl.inner import mean_kl

    policy, params, eps, advs = sharpened_problem()
    expanded = {k: v.expand(T, *v.shape) for k, v in params.items()}
    plain = replay(policy, FixedStep(1.0), params, eps[:1], advs[:1])
    assert not bool((mean_kl(policy, expanded, plain, eps[0]) <= 100).any())  # it blows up
    for bound in (0.05, 0.5):
        bounded = replay(policy, FixedStep(1.0, max_kl=bound), params, eps[:1], advs[:1])
        kl = mean_kl(policy, expanded, bounded, eps[0])
        # the bound holds on the actual KL (the scale comes from its second-order estimate)
        assert bool((kl <= 1.05 * bound).all()) and bool((kl >= 0.8 * bound).all()), kl


@pytest.mark.parametrize("metasgd", [False, True])
def test_the_meta_gradient_through_a_bounded_step_matches_finite_differences(metasgd):
    policy, params, eps, advs = sharpened_problem()
    if metasgd:
        rule, meta = LearnedRates(0.2, max_kl=0.05), {**params, **rates_for(params)}
    else:
        rule, meta = FixedStep(1.0, max_kl=0.05), params
    # a sharp policy makes the surrogate very curved: central differences at 1e-4 / 1e-5 /
    # 1e-6 / 1e-7 miss log_std's gradient (~1e4) by 30% / 0.3% / 3e-5 / 3e-7 (relative), and
    # its other entries by ~1e-5 at 1e-7, where rounding starts to count
    check_meta_gradient(policy, rule, meta, batch_of(eps[:2], advs[:2]), eps=1e-7, rtol=1e-4,
                        atol=1e-4)
