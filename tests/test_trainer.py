"""The trainer: non-finite values stop training and keep the last good state; same seed, same run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from meta_rl.checkpoint import load_checkpoint
from meta_rl.config import TrainConfig
from meta_rl.trainer import Trainer, TrainingError

TINY = dict(meta_batch=3, episodes=3, hidden=(8,), env_kwargs={"horizon": 10}, checkpoint_every=1)


def cfg(**settings) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **settings})


def policy_part(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if not k.startswith("lr/")}


@pytest.mark.parametrize("algo", ["maml", "reptile"])
def test_non_finite_rewards_stop_training_and_keep_the_last_good_checkpoint(algo, tmp_path):
    trainer = Trainer(cfg(algo=algo, iterations=5), tmp_path)
    sampler, calls = trainer.setup.sampler, {"n": 0}
    real_sample = sampler.sample
    samples_per_iteration = trainer.config.inner.inner_steps + 1

    def poisoned(tasks, params, seed, rows=None):  # from iteration 3, NaN rewards
        calls["n"] += 1
        episodes = real_sample(tasks, params, seed, rows)
        if calls["n"] > 2 * samples_per_iteration:
            episodes = episodes._replace(rewards=episodes.rewards * float("nan"))
        return episodes

    sampler.sample = poisoned
    with pytest.raises(TrainingError, match="iteration 3"):
        trainer.train()
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 2
    saved = state["learner"]["meta"]
    assert all(bool(torch.isfinite(v).all()) for v in saved.values())
    live = trainer.setup.learner.meta  # the learner itself is back at the good state too
    assert all(torch.equal(saved[k], live[k].detach()) for k in saved)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]


def test_same_seed_same_metrics_and_different_seed_differs():
    def run(seed):
        trainer = Trainer(cfg(algo="metasgd", iterations=2, seed=seed))
        history = trainer.train()
        trainer.close()
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in history]

    a, b, c = run(0), run(0), run(1)
    assert a == b
    assert a != c
    assert all(math.isfinite(r["lr_mean"]) for r in a)


@pytest.mark.parametrize("fisher_fraction", [0.2, 1.0])
def test_metasgd_rate_lr_gives_the_rates_their_own_adam_step(fisher_fraction):
    """With ``rate_lr`` TRPO updates the policy with the rates held fixed, then one Adam step
    moves every rate by ``rate_lr`` against the sign of the surrogate's gradient w.r.t. it."""
    trainer = Trainer(cfg(algo="metasgd", rate_lr=0.003, iterations=1,
                          fisher_fraction=fisher_fraction))
    learner = trainer.setup.learner
    rates = {k: v for k, v in learner.meta.items() if k.startswith("lr/")}
    rates0 = {k: v.detach().clone() for k, v in rates.items()}
    params0 = {k: v.detach().clone() for k, v in policy_part(learner.meta).items()}
    seen, trpo_step = {}, learner.outer.main.step

    def watched(objective):
        seen["moves"] = list(learner.outer.main.params)
        seen["grads"] = torch.autograd.grad(objective.surrogate(), list(rates.values()),
                                            retain_graph=True)
        info = trpo_step(objective)
        seen["shared"] = [objective.gradient()[1][k] for k in rates]  # TRPO's own backward
        seen["rates_after_trpo"] = {k: v.detach().clone() for k, v in rates.items()}
        return info

    learner.outer.main.step = watched
    try:
        history = trainer.train()
    finally:
        trainer.close()
    assert seen["moves"] == list(params0)
    assert all(torch.equal(seen["rates_after_trpo"][k], rates0[k]) for k in rates0)
    assert all(torch.allclose(a, b) for a, b in zip(seen["shared"], seen["grads"]))
    assert history[0]["line_search_accepted"] == 1.0
    assert any(not torch.equal(learner.meta[k].detach(), params0[k]) for k in params0)
    for (k, rate), grad in zip(rates.items(), seen["grads"]):
        clear = grad.abs() > 1e-5  # Adam's first step is lr * g / (|g| + 1e-8)
        assert clear.any(), k
        moved = rate.detach() - rates0[k]
        torch.testing.assert_close(moved[clear], -0.003 * grad[clear].sign(), rtol=1e-3, atol=0)
    assert math.isfinite(history[0]["rate_grad_norm"]) and history[0]["rate_grad_norm"] > 0


def test_trainer_refuses_an_existing_run_unless_overwrite(tmp_path):
    config = cfg(iterations=2)
    Trainer(config, tmp_path).train()
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(config, tmp_path)
    Trainer(config, tmp_path, overwrite=True).train()  # replaces, never appends
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2]


def test_ctrl_c_mid_iteration_checkpoints_the_last_whole_iteration(tmp_path):
    trainer = Trainer(cfg(iterations=5), tmp_path)
    learner, calls = trainer.setup.learner, {"n": 0}
    real_outer_step = learner.outer.step

    def interrupted(*args):  # the third outer step updates the parameters, then Ctrl-C lands
        calls["n"] += 1
        info = real_outer_step(*args)
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return info

    learner.outer.step = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    state = load_checkpoint(tmp_path)
    assert state["iteration"] == 2
    # the checkpoint equals an uninterrupted run's after two iterations, not the half-done third
    reference = Trainer(cfg(iterations=2))
    reference.train()
    expected = reference.setup.learner.state_dict()["meta"]
    assert all(torch.equal(state["learner"]["meta"][k], expected[k]) for k in expected)


def test_keep_every_keeps_the_model_of_those_iterations(tmp_path):
    """A snapshot holds exactly what a run stopped at that iteration would have saved; a resume
    drops the snapshots it will recompute, and an overwrite drops them all."""
    from meta_rl.checkpoint import load_iteration, snapshot_iterations, snapshot_path

    kept, short = tmp_path / "kept", tmp_path / "short"
    Trainer(cfg(iterations=5, keep_every=2, seed=4), kept).train()
    assert snapshot_iterations(kept) == [2, 4]
    Trainer(cfg(iterations=4, seed=4), short).train()
    assert snapshot_iterations(short) == []
    snap, path = load_iteration(kept, 4)
    assert path == snapshot_path(kept, 4) and snap["iteration"] == 4
    final = load_checkpoint(short)["learner"]["meta"]
    assert all(torch.equal(snap["learner"]["meta"][k], final[k]) for k in final)
    latest, path = load_iteration(kept, 5)  # the last iteration is checkpoint.pt itself
    assert path.name == "checkpoint.pt" and latest["iteration"] == 5
    with pytest.raises(ValueError, match="no model of iteration 3; it has 2, 4, 5"):
        load_iteration(kept, 3)

    # a run resumed from iteration 2 recomputes iteration 4: that snapshot must not be stale
    stale = snapshot_path(kept, 4)
    stale.write_bytes(b"from a run that went further before it was stopped")
    (stale.with_suffix("") / "eval.json").parent.mkdir()
    (stale.with_suffix("") / "eval.json").write_text("{}")  # its evaluation goes with it
    config = cfg(iterations=2, keep_every=2, seed=4, checkpoint_every=2)
    Trainer(config, tmp_path / "half").train()
    (kept / "checkpoint.pt").write_bytes((tmp_path / "half" / "checkpoint.pt").read_bytes())
    resumed = Trainer.resume(kept, iterations=3)
    resumed._prepare_dir()
    resumed.close()
    assert snapshot_iterations(kept) == [2]
    assert not stale.with_suffix("").exists()

    Trainer(cfg(iterations=1, keep_every=2, seed=4), kept, overwrite=True).train()
    assert snapshot_iterations(kept) == []


def test_keep_every_must_be_a_count():
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="keep_every must be an integer >= 0"):
            TrainConfig.from_dict({"keep_every": bad})


def test_ctrl_c_while_a_snapshot_is_written_still_keeps_it(tmp_path, monkeypatch):
    """The interrupt handler writes the snapshot the interrupt cut short: a resume starts after
    that iteration, so it would never be written again."""
    from meta_rl import trainer as trainer_module
    from meta_rl.checkpoint import snapshot_iterations

    real_save, cut = trainer_module.save_checkpoint, {"done": False}

    def interrupted_once(path, state):
        if "snapshots" in str(path) and not cut["done"]:
            cut["done"] = True
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", interrupted_once)
    trainer = Trainer(cfg(iterations=5, keep_every=2), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert cut["done"]
    assert load_checkpoint(tmp_path)["iteration"] == 2
    assert snapshot_iterations(tmp_path) == [2]


def test_ctrl_c_during_logging_waits_for_the_iteration_to_be_logged(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside TensorBoard's add_scalar can break its writer thread's wake-up
    (close() then hangs for minutes), so Ctrl-C during logging is delivered once the iteration
    is logged and counted: every scalar is written and the checkpoint holds that iteration."""
    import signal

    from torch.utils.tensorboard import SummaryWriter

    real_add, written = SummaryWriter.add_scalar, []

    def add_scalar(self, tag, value, step):
        if step == 2 and not any(s == 2 for _, s in written):
            signal.raise_signal(signal.SIGINT)  # Ctrl-C lands on the first scalar of iteration 2
        written.append((tag, step))
        return real_add(self, tag, value, step)

    monkeypatch.setattr(SummaryWriter, "add_scalar", add_scalar)
    trainer = Trainer(cfg(iterations=5), tmp_path)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    per_iteration = [tag for tag, step in written if step == 1]
    assert [tag for tag, step in written if step == 2] == per_iteration
    assert load_checkpoint(tmp_path)["iteration"] == 2
    assert [json.loads(line)["iteration"]
            for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
