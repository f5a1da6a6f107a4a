"""Meta-gradients against central finite differences, in float64 on fixed episodes."""

import pytest
import torch

from meta_rl.algorithms import AlgoConfig, Reptile
from meta_rl.inner import Adaptation, inner_loss, readapt, step_index, subsample_adaptation
from meta_rl.outer import MetaObjective, flat, unflat
from meta_rl.policies import CategoricalMLPPolicy, Dist, GaussianMLPPolicy
from tests.conftest import synthetic_episodes

T, E, H, O, A = 2, 3, 5, 3, 2


def make_problem(steps: int, discrete=False, seed=0):
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


def meta_loss(policy, params, lr, eps, advs, first_order=False):
    """Sum over tasks of the validation loss after adapting on eps[:-1]."""
    steps = len(eps) - 1
    adaptation = Adaptation({k: v.expand(T, *v.shape) for k, v in params.items()},
                            eps[:steps], advs[:steps])
    adapted = readapt(policy, params, adaptation, lr, first_order)
    return inner_loss(policy, adapted, eps[-1], advs[-1]).sum(), adapted


def finite_difference(f, tensors, eps=1e-6):
    grads = []
    for t in tensors:
        g = torch.zeros_like(t)
        for i in range(t.numel()):
            old = t.view(-1)[i].item()
            t.view(-1)[i] = old + eps
            up = float(f())
            t.view(-1)[i] = old - eps
            down = float(f())
            t.view(-1)[i] = old
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_maml_meta_gradient_matches_finite_differences(steps, discrete):
    policy, params, eps, advs = make_problem(steps, discrete)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, _ = meta_loss(policy, leaves, 0.3, eps, advs)
    auto = torch.autograd.grad(loss, list(leaves.values()))
    fd = finite_difference(lambda: meta_loss(policy, params, 0.3, eps, advs)[0].detach(),
                           list(params.values()))
    for a, f in zip(auto, fd):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-7)


def test_meta_sgd_gradient_wrt_learning_rates():
    policy, params, eps, advs = make_problem(1)
    lrs = {k: torch.full_like(v, 0.2) + 0.05 * torch.rand_like(v) for k, v in params.items()}
    lr_leaves = {k: v.clone().requires_grad_() for k, v in lrs.items()}
    p_leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, _ = meta_loss(policy, p_leaves, lr_leaves, eps, advs)
    auto = torch.autograd.grad(loss, list(lr_leaves.values()) + list(p_leaves.values()))
    fd_lr = finite_difference(lambda: meta_loss(policy, params, lrs, eps, advs)[0].detach(),
                              list(lrs.values()))
    fd_p = finite_difference(lambda: meta_loss(policy, params, lrs, eps, advs)[0].detach(),
                             list(params.values()))
    for a, f in zip(auto, fd_lr + fd_p):
        torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-7)


def test_first_order_gradient_is_gradient_at_adapted_params():
    policy, params, eps, advs = make_problem(1)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    loss, adapted = meta_loss(policy, leaves, 0.3, eps, advs, first_order=True)
    fo = torch.autograd.grad(loss, list(leaves.values()))
    # The same loss with the adapted parameters as free leaves, gradients summed over tasks.
    at = {k: v.detach().clone().requires_grad_() for k, v in adapted.items()}
    direct = torch.autograd.grad(inner_loss(policy, at, eps[-1], advs[-1]).sum(), list(at.values()))
    for a, d in zip(fo, direct):
        torch.testing.assert_close(a, d.sum(0))
    # and it differs from the second-order gradient (the test can fail)
    leaves2 = {k: v.clone().requires_grad_() for k, v in params.items()}
    so = torch.autograd.grad(meta_loss(policy, leaves2, 0.3, eps, advs)[0], list(leaves2.values()))
    assert any(not torch.allclose(a, b) for a, b in zip(fo, so))


def test_reptile_update_is_epsilon_times_displacement_for_one_task():
    policy = GaussianMLPPolicy(O, A, hidden=(5,)).double()
    params = {k: v.detach().clone().double() for k, v in policy.named_parameters()}
    learner = Reptile(policy, None, AlgoConfig(outer="sgd", outer_lr=0.25, first_order=True), params)
    before = {k: v.detach().clone() for k, v in learner.params.items()}
    adapted = {k: (v + torch.randn_like(v)).unsqueeze(0) for k, v in before.items()}
    learner.outer_step([None], Adaptation(adapted, [], []), None, None)
    for k in before:
        torch.testing.assert_close(learner.params[k].detach(), before[k] + 0.25 * (adapted[k][0] - before[k]))


@pytest.mark.parametrize("discrete", [False, True])
def test_kl_hessian_product_equals_exact_hessian_through_inner_loop(discrete):
    """J^T F J (what TRPO uses) equals the double-backward Hessian of the mean KL at theta_old."""
    policy, params, eps, advs = make_problem(1, discrete)
    meta = [v.clone().requires_grad_() for v in params.values()]
    names = list(params)
    data = Adaptation(None, eps[:1], advs[:1])

    def re(values, keep=None, graph=False):
        return readapt(policy, dict(zip(names, values)), data, 0.3, first_order=not graph)

    adapted = re(meta, graph=True)
    obj = MetaObjective(policy, meta, adapted, re, eps[-1], advs[-1])
    v = torch.randn(sum(p.numel() for p in meta), dtype=torch.float64)
    structured = obj.fisher_hvp(1.0, damping=0.0)(v)
    _, kl = obj.loss_kl(re(meta, graph=True))
    g = flat(torch.autograd.grad(kl, meta, create_graph=True))
    exact = flat(torch.autograd.grad(g @ v, meta))
    torch.testing.assert_close(structured, exact, rtol=1e-6, atol=1e-9)
    # ...and its subsampled estimate uses only the first episodes: different, same shape.
    sub = obj.fisher_hvp(0.34, damping=0.0)(v)
    assert sub.shape == v.shape and not torch.allclose(sub, exact)
    assert unflat(v, meta)[0].shape == meta[0].shape


def make_objective(steps: int, discrete: bool, metasgd: bool, seed: int = 0):
    """A MetaObjective after ``steps`` inner steps (MAML, or Meta-SGD with learned rates)."""
    policy, params, eps, advs = make_problem(steps, discrete, seed)
    names = list(params)
    values = [v.clone() for v in params.values()]
    if metasgd:
        g = torch.Generator().manual_seed(seed + 7)
        values += [0.2 + 0.05 * torch.rand(v.shape, generator=g, dtype=v.dtype) for v in values]
    meta = [v.requires_grad_() for v in values]
    data = Adaptation(None, eps[:steps], advs[:steps])

    def re(values, fraction=None, graph=False):
        p = dict(zip(names, values[: len(names)]))
        lr = dict(zip(names, values[len(names):])) if metasgd else 0.3
        d = data if fraction is None else subsample_adaptation(data, fraction)
        return readapt(policy, p, d, lr, first_order=not graph)

    obj = MetaObjective(policy, meta, re(meta, graph=True), re, eps[-1], advs[-1])
    return policy, meta, re, obj, eps[-1]


def exact_hessian_product(f, meta, v):
    g = flat(torch.autograd.grad(f(meta), meta, create_graph=True))
    return flat(torch.autograd.grad(g @ v, meta))


@pytest.mark.parametrize("metasgd", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_curvature_product_equals_exact_kl_hessian(discrete, steps, metasgd):
    """The product TRPO's CG uses (graph shared with the meta-gradient) is the exact Hessian of
    the mean KL through 1 or 2 inner steps, w.r.t. the initial parameters and Meta-SGD's rates."""
    policy, meta, re, obj, valid = make_objective(steps, discrete, metasgd)
    # the meta-gradient first, as TRPO does: the products reuse its graph
    loss_grad = torch.autograd.grad(obj.surrogate(), meta, retain_graph=True)
    fresh = torch.autograd.grad(obj.loss_kl(re(meta, graph=True))[0], meta)
    for a, b in zip(loss_grad, fresh):
        torch.testing.assert_close(a, b)
    hvp = obj.fisher_hvp(1.0, damping=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):  # the same graph serves every CG iteration
        v = torch.randn(sum(p.numel() for p in meta), generator=g, dtype=torch.float64)
        exact = exact_hessian_product(lambda m: obj.loss_kl(re(m, graph=True))[1], meta, v)
        torch.testing.assert_close(hvp(v), exact, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(obj.fisher_hvp(1.0, damping=0.5)(v), exact + 0.5 * v,
                                   rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("metasgd", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("discrete", [False, True])
def test_subsampled_curvature_is_exact_hessian_of_subsample_at_adapted_params(
        discrete, steps, metasgd):
    """fisher_fraction < 1: the product is the exact KL Hessian on a subsample of time steps,
    with the derivative of the re-adaptation on the same steps of the inner-loop episodes but
    the Fisher at the exact adapted policy (the one that sampled the validation episodes)."""
    policy, meta, re, obj, valid = make_objective(steps, discrete, metasgd)
    index = step_index(H, 0.5)
    assert index.tolist() == [0, 1, 3]  # ceil(0.5 * H) steps, evenly spaced
    sub0 = {k: t.detach() for k, t in re([m.detach() for m in meta], 0.5).items()}
    old = Dist(obj.old.loc[:, :, index], obj.old.log_std)
    mask = valid.mask[:, :, index]
    weights = mask / (mask.sum((1, 2), keepdim=True) * T)

    def kl_sub(values):
        sub = re(values, 0.5, graph=True)
        at = {k: obj.adapted[k].detach() + (sub[k] - sub0[k]) for k in sub}
        return (policy.kl(old, policy.dist(at, valid.obs[:, :, index])) * weights).sum()

    v = torch.randn(sum(p.numel() for p in meta), dtype=torch.float64)
    got = obj.fisher_hvp(0.5, damping=0.0)(v)
    torch.testing.assert_close(got, exact_hessian_product(kl_sub, meta, v), rtol=1e-6, atol=1e-9)
    # an estimate, not the full-data Hessian (the test can fail)
    assert not torch.allclose(got, obj.fisher_hvp(1.0, damping=0.0)(v))
    # positive semi-definite, as J^T F J is
    assert float(v @ got) >= 0


def test_curvature_subsample_is_evenly_spaced_steps_of_every_episode():
    assert step_index(100, 0.2).tolist() == list(range(0, 100, 5))
    assert step_index(100, 1.0) is None and step_index(5, 0.9) is None  # ceil(4.5) = 5: all
    assert step_index(3, 0.01).tolist() == [0]
    assert step_index(200, 0.3).tolist()[:4] == [0, 3, 6, 10]
    policy, params, eps, advs = make_problem(1)
    data = Adaptation(None, eps[:1], advs[:1])
    sub = subsample_adaptation(data, 0.5)
    index = step_index(H, 0.5)
    ep = sub.episodes[0]
    assert ep.obs.shape == (T, E, 3, O) and torch.equal(ep.last_obs, eps[0].last_obs)
    for got, full in zip(ep[:6], eps[0][:6]):
        assert torch.equal(got, full[:, :, index])
    assert torch.equal(sub.advantages[0], advs[0][:, :, index])
    assert subsample_adaptation(data, 1.0).episodes[0] is eps[0]


def padded(ep, adv, rows: int):
    """``ep`` and ``adv`` with ``rows`` all-padding rows per task (mask 0), as a "steps" batch
    pads tasks that hold fewer episodes than the fullest one."""
    def pad(x):
        return torch.cat([x, x.new_zeros((x.shape[0], rows, *x.shape[2:]))], 1)
    return type(ep)(*(pad(x) for x in ep)), pad(adv)


@pytest.mark.parametrize("discrete", [False, True])
def test_padding_rows_change_no_meta_gradient_or_curvature_product(discrete):
    """With 3x as many padding rows as episodes, the policy skips the padding (the mask makes
    :meth:`~meta_rl.policies.MLPPolicy.dist` pack the steps); the inner step, the surrogate, its
    meta-gradient and the curvature products are those of the unpadded batch."""
    policy, params, eps, advs = make_problem(1, discrete)
    names = list(params)
    results = []
    for extra in (0, 3 * E):
        pairs = [padded(ep, adv, extra) for ep, adv in zip(eps, advs)]
        data = Adaptation(None, [pairs[0][0]], [pairs[0][1]])
        meta = [v.clone().requires_grad_() for v in params.values()]

        def re(values, fraction=None, graph=False):
            d = data if fraction is None else subsample_adaptation(data, fraction)
            return readapt(policy, dict(zip(names, values)), d, 0.3, first_order=not graph)

        rows = []
        body = policy.body
        policy.body = lambda x: rows.append(x.shape[:-1].numel()) or body(x)
        try:
            obj = MetaObjective(policy, meta, re(meta, graph=True), re, *pairs[1])
            surrogate = obj.surrogate()
            grad = flat(torch.autograd.grad(surrogate, meta, retain_graph=True))
            v = torch.randn(grad.numel(), generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64)
            hvp = obj.fisher_hvp(1.0, 0.0)(v)
            sub_hvp = obj.fisher_hvp(0.5, 0.0)(v)  # curvature on a subsample of the steps
            at = obj.at([m.detach() for m in meta])  # the line search's surrogate and KL
        finally:
            policy.body = body
        results.append((surrogate.detach(), grad, hvp, sub_hvp, torch.tensor(at), max(rows)))
    *plain, _ = results[0]
    *padded_, rows = results[1]
    for a, b in zip(padded_, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    assert rows <= T * E * H  # no forward pass ran over the padding rows
