"""Meta-gradients against central finite differences, in float64 on fixed episodes."""

import pytest
import torch

from meta_rl.algorithms import AlgoConfig, Reptile
from meta_rl.inner import Adaptation, inner_loss, readapt
from meta_rl.outer import MetaObjective, flat, unflat
from meta_rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy
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
