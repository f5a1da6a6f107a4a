"""Outer steps: TRPO's trust region holds, CG solves SPD systems, Adam moves downhill, and a
split step moves each part of the meta-parameters on one meta-gradient."""

import torch

from meta_rl import FixedStep, LearnedRates, MetaObjective
from meta_rl.config import TRPOConfig
from meta_rl.outer import TRPO, Adam, Split, cg_solve
from tests.test_gradients import batch_of, make_problem, rates_for


def objective_for(policy, eps, advs, meta, rule=FixedStep(0.3)):
    return MetaObjective(policy, rule, meta, batch_of(eps[:2], advs[:2]))


def leaves(params):
    return {k: v.clone().requires_grad_() for k, v in params.items()}


def values(meta):
    return {k: m.detach() for k, m in meta.items()}


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
        meta = leaves(params)
        obj = objective_for(policy, eps, advs, meta)
        loss0, kl0 = obj.at(values(meta))
        assert kl0 < 1e-12
        info = TRPO(meta, TRPOConfig(max_kl=max_kl, fisher_fraction=1.0)).step(obj)
        assert info["line_search_accepted"] == 1.0
        loss1, kl1 = obj.at(values(meta))
        assert 0 < kl1 <= max_kl
        assert abs(kl1 - info["kl"]) < 1e-9
        assert loss1 < loss0


def test_trpo_with_subsampled_curvature_keeps_the_exact_kl_within_bound():
    """fisher_fraction < 1 estimates the curvature; the line search still checks the exact KL."""
    for fraction, warm in ((0.5, False), (0.34, True)):
        policy, params, eps, advs = make_problem(1, seed=3)
        meta = leaves(params)
        trpo = TRPO(meta, TRPOConfig(max_kl=1e-2, fisher_fraction=fraction, cg_warm_start=warm))
        for _ in range(2):  # the second step warm-starts from the first's direction
            obj = objective_for(policy, eps, advs, meta)
            loss0, _ = obj.at(values(meta))
            info = trpo.step(obj)
            loss1, kl1 = obj.at(values(meta))
            assert info["line_search_accepted"] == 1.0
            assert 0 < kl1 <= 1e-2 and abs(kl1 - info["kl"]) < 1e-9
            assert loss1 < loss0


def test_trpo_restores_parameters_when_no_step_improves():
    policy, params, eps, advs = make_problem(1, seed=4)
    meta = leaves(params)
    before = [m.detach().clone() for m in meta.values()]
    obj = objective_for(policy, eps, advs, meta)
    obj.at = lambda values: (float("inf"), 0.0)  # every candidate is worse
    info = TRPO(meta, TRPOConfig(ls_max_steps=4)).step(obj)
    assert info["line_search_accepted"] == 0.0 and info["step_size"] == 0.0
    for m, b in zip(meta.values(), before):
        assert torch.equal(m.detach(), b)


def test_trpo_with_zero_gradient_takes_no_step():
    policy, params, eps, advs = make_problem(1, seed=4)
    advs = [torch.zeros_like(a) for a in advs]
    meta = leaves(params)
    before = [m.detach().clone() for m in meta.values()]
    info = TRPO(meta).step(objective_for(policy, eps, advs, meta))
    assert info["grad_norm"] == 0.0 and info["step_size"] == 0.0
    for m, b in zip(meta.values(), before):
        assert torch.equal(m.detach(), b)


def test_adam_outer_moves_downhill():
    policy, params, eps, advs = make_problem(1, seed=5)
    meta = leaves(params)
    obj = objective_for(policy, eps, advs, meta)
    loss0, _ = obj.at(values(meta))
    Adam(meta, lr=1e-3).step(obj)
    loss1, _ = obj.at(values(meta))
    assert loss1 < loss0


def test_split_steps_each_part_on_the_gradient_before_either_moved():
    """Meta-SGD with rate_lr: TRPO moves the policy (rates fixed), and the rates' Adam takes the
    gradient computed at the meta-parameters that sampled the data, from the same backward."""
    policy, params, eps, advs = make_problem(1, seed=6)
    meta = leaves({**params, **rates_for(params)})
    rule = LearnedRates(0.2)
    obj = objective_for(policy, eps, advs, meta, rule)
    _, expected = MetaObjective(policy, rule, leaves(values(meta)), obj.batch).gradient()
    before = values({k: v.clone() for k, v in meta.items()})
    step = Split(meta, rule.owns, lambda p: TRPO(p), lambda r: Adam(r, 1e-2, prefix="rate_"))
    assert set(step.main.params) == set(params) and set(step.side.params) == set(meta) - set(params)
    info = step.step(obj)
    assert info["line_search_accepted"] == 1.0 and "rate_grad_norm" in info
    for k in meta:
        assert not torch.equal(meta[k].detach(), before[k])
    for k, p in step.side.params.items():  # Adam's first step: -lr * sign(gradient)
        torch.testing.assert_close(p.detach(), before[k] - 1e-2 * expected[k].sign(),
                                   rtol=0, atol=1e-6)
