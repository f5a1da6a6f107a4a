"""TRPO and CG: the trust region holds, CG solves SPD systems."""

import torch

from meta_rl.inner import Adaptation, readapt, subsample_adaptation
from meta_rl.outer import AdamOuter, MetaObjective, TRPOOuter, cg_solve
from tests.test_gradients import make_problem


def objective_for(policy, params, eps, advs, meta):
    names = list(params)
    data = Adaptation(None, eps[:1], advs[:1])

    def re(values, fraction=None, graph=False):
        d = data if fraction is None else subsample_adaptation(data, fraction)
        return readapt(policy, dict(zip(names, values)), d, 0.3, first_order=not graph)

    return MetaObjective(policy, meta, re(meta, graph=True), re, eps[-1], advs[-1])


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x, residual = cg_solve(lambda v: a @ v, b, iters=20)
    torch.testing.assert_close(a @ x, b)
    assert float(residual.norm()) < 1e-6
    x_warm, _ = cg_solve(lambda v: a @ v, b, iters=20, x0=x + 1e-3)
    torch.testing.assert_close(a @ x_warm, b)


def test_cg_residual_gives_the_curvature_product_of_the_solution():
    """TRPO takes s^T H s from CG's residual (H x = b - r) instead of one more product."""
    g = torch.Generator().manual_seed(1)
    m = torch.randn(8, 8, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(8, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    calls = []

    def avp(v):
        calls.append(1)
        return a @ v

    for iters, x0 in ((3, None), (5, None), (3, torch.randn(8, generator=g, dtype=torch.float64))):
        calls.clear()
        x, r = cg_solve(avp, b, iters, x0)
        assert len(calls) == iters + (x0 is not None)
        assert not torch.allclose(a @ x, b)  # not converged: r matters
        torch.testing.assert_close(a @ x, b - r)


def test_trpo_step_keeps_mean_kl_within_bound_and_improves():
    for max_kl in (1e-3, 1e-2):
        policy, params, eps, advs = make_problem(1, seed=3)
        meta = [v.clone().requires_grad_() for v in params.values()]
        obj = objective_for(policy, params, eps, advs, meta)
        loss0, kl0 = obj.at([m.detach() for m in meta])
        assert kl0 < 1e-12
        info = TRPOOuter(meta, max_kl=max_kl, cg_iters=10).step(obj)
        assert info["line_search_accepted"] == 1.0
        loss1, kl1 = obj.at([m.detach() for m in meta])
        assert 0 < kl1 <= max_kl
        assert abs(kl1 - info["kl"]) < 1e-9
        assert loss1 < loss0


def test_trpo_with_subsampled_curvature_keeps_the_exact_kl_within_bound():
    """fisher_fraction < 1 estimates the curvature; the line search still checks the exact KL."""
    for fraction, warm in ((0.5, False), (0.34, True)):
        policy, params, eps, advs = make_problem(1, seed=3)
        meta = [v.clone().requires_grad_() for v in params.values()]
        trpo = TRPOOuter(meta, max_kl=1e-2, cg_iters=10, fisher_fraction=fraction,
                         warm_start=warm)
        for _ in range(2):  # the second step warm-starts from the first's direction
            obj = objective_for(policy, {k: m.detach() for k, m in zip(params, meta)}, eps,
                                advs, meta)
            loss0, _ = obj.at([m.detach() for m in meta])
            info = trpo.step(obj)
            loss1, kl1 = obj.at([m.detach() for m in meta])
            assert info["line_search_accepted"] == 1.0
            assert 0 < kl1 <= 1e-2 and abs(kl1 - info["kl"]) < 1e-9
            assert loss1 < loss0


def test_trpo_restores_parameters_when_no_step_improves():
    policy, params, eps, advs = make_problem(1, seed=4)
    meta = [v.clone().requires_grad_() for v in params.values()]
    before = [m.detach().clone() for m in meta]
    obj = objective_for(policy, params, eps, advs, meta)
    obj.at = lambda values: (float("inf"), 0.0)  # every candidate is worse
    info = TRPOOuter(meta, max_kl=1e-2, ls_max_steps=4).step(obj)
    assert info["line_search_accepted"] == 0.0 and info["step_size"] == 0.0
    for m, b in zip(meta, before):
        assert torch.equal(m.detach(), b)


def test_trpo_with_zero_gradient_takes_no_step():
    policy, params, eps, advs = make_problem(1, seed=4)
    advs = [torch.zeros_like(a) for a in advs]
    meta = [v.clone().requires_grad_() for v in params.values()]
    before = [m.detach().clone() for m in meta]
    info = TRPOOuter(meta).step(objective_for(policy, params, eps, advs, meta))
    assert info["grad_norm"] == 0.0 and info["step_size"] == 0.0
    for m, b in zip(meta, before):
        assert torch.equal(m.detach(), b)


def test_adam_outer_moves_downhill():
    policy, params, eps, advs = make_problem(1, seed=5)
    meta = [v.clone().requires_grad_() for v in params.values()]
    obj = objective_for(policy, params, eps, advs, meta)
    loss0, _ = obj.at([m.detach() for m in meta])
    AdamOuter(meta, lr=1e-3).step(obj)
    loss1, _ = obj.at([m.detach() for m in meta])
    assert loss1 < loss0
