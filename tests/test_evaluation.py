"""Evaluation and its report, on a tiny real Navigation2D run (horizon 20, a few seconds)."""

from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from rich.console import Console

import envs
from meta_rl import stats
from meta_rl.baselines import pretrained_config
from meta_rl.checkpoint import load_checkpoint, save_checkpoint
from meta_rl.config import METHODS, TrainConfig
from meta_rl.evaluation import evaluate, load_eval
from meta_rl.report import eval_table, plot_training, print_eval, write_eval
from meta_rl.seeding import eval_seeds, iteration_seed, training_seeds
from meta_rl.stats import mean_ci95
from meta_rl.trainer import Trainer

HORIZON = 20
SIZES = {"tasks": 6, "steps": 2, "episodes": 4}
PPO_TASKS = 2


def tiny_config(**overrides) -> TrainConfig:
    base = dict(env="Navigation2D", algo="maml", meta_batch=4, episodes=4, hidden=(16, 16),
                iterations=3, seed=0, device="cpu", env_kwargs={"horizon": HORIZON})
    return TrainConfig.from_dict({**base, **overrides})


def train(config: TrainConfig, out) -> None:
    trainer = Trainer(config, out=out)
    try:
        trainer.train()
    finally:
        trainer.close()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one torch thread is faster, and much faster on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("eval") / "run"
    train(tiny_config(), out)
    return out


@pytest.fixture(scope="module")
def first(run):
    """The first evaluation of ``run`` (trains and caches the pretrained baseline)."""
    events = []
    result = evaluate(run, **SIZES, ppo_tasks=PPO_TASKS, progress=events.append)
    paths = write_eval(result, run / "eval1")
    mtime = (run / "pretrained" / "checkpoint.pt").stat().st_mtime_ns
    return result, paths, mtime, events


def notes(events) -> list[str]:
    return [e.note for e in events if e.note]


def numbers(d: dict) -> dict:
    return {name: (m["mean"], m["ci95"], m["per_task"]) for name, m in d["methods"].items()}


def test_eval_json_has_the_documented_shape(first):
    result, paths, _, messages = first
    d = json.loads(paths["json"].read_text())
    assert d["family"] == "Navigation2D" and d["tasks"] == SIZES["tasks"] and d["seed"] == 0
    assert d["steps"] == [0, 1, 2]
    assert list(d["methods"]) == list(METHODS)
    K1 = SIZES["steps"] + 1
    for name, m in d["methods"].items():
        assert len(m["mean"]) == len(m["ci95"]) == len(m["env_steps"]) == K1, name
        assert all(math.isfinite(x) for x in m["mean"]), name
        assert all(math.isfinite(x) and x >= 0 for x in m["ci95"]), name
        n = PPO_TASKS if name == "ppo" else SIZES["tasks"]
        assert m["tasks"] == n and np.shape(m["per_task"]) == (K1, n), name
        assert np.allclose(np.mean(m["per_task"], 1), m["mean"]), name
        assert m["wall_s"] >= 0
    # PPO's budget after stage k is k * E * H env steps per task
    assert d["methods"]["ppo"]["env_steps"] == [0, 80, 160]
    # the policy-gradient methods spend at most E * H steps per adaptation step
    assert d["methods"]["meta"]["env_steps"][0] == 0
    assert 0 < d["methods"]["meta"]["env_steps"][1] <= 80
    assert d["methods"]["pretrained"]["cached"] is False
    assert len(d["task_list"]) == SIZES["tasks"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(msg.startswith("pretrained: training") for msg in notes(messages))
    # every stage reports its progress to the end: the baseline's training, each method's steps
    finished = {e.stage for e in messages if not e.note and e.done == e.total}
    assert {"pretrained: training", "meta", "random", "pretrained", "ppo"} <= finished


def test_same_seed_same_numbers_and_pretrained_cache_is_reused(run, first):
    result, paths, mtime, _ = first
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    again = evaluate(run, **SIZES, ppo_tasks=PPO_TASKS)
    assert (run / "pretrained" / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert again.methods["pretrained"].extra["cached"] is True
    second = write_eval(again, run / "eval2")
    assert numbers(load_eval(second["json"])) == numbers(load_eval(paths["json"]))
    assert again.tasks == result.tasks
    # PPO seeds SB3's global RNGs and evaluation sets torch's threads: both are restored
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads


def test_held_out_tasks_differ_from_every_training_iteration(run, first):
    result = first[0]
    config = tiny_config()
    family = envs.make("Navigation2D", horizon=HORIZON)
    # the run's iterations and the pretrained baseline's (3 * (1 + 1))
    trained = {
        task
        for i in range(config.iterations * (config.inner.inner_steps + 1))
        for task in family.sample_tasks(config.sampling.meta_batch,
                                        seed=iteration_seed(config.seed, i))
    }
    assert not trained & set(result.tasks)
    assert result.task_seed not in training_seeds(config)
    other = evaluate(run, tasks=3, steps=0, episodes=2, seed=1, methods=["meta"])
    assert not set(other.tasks) & set(result.tasks)


def test_step_k_does_not_depend_on_K(run, first):
    zero = evaluate(run, **{**SIZES, "steps": 0}, methods="meta,random")
    for name in ("meta", "random"):
        assert zero.methods[name].per_task[0] == first[0].methods[name].per_task[0]


def test_later_lr_scale_changes_only_the_steps_after_the_first(run, first):
    """Steps 0 and 1 are unchanged; step 2 is a step from the same step-1 policy at half the size
    (checked against the inner loop run by hand), and the choice is recorded."""
    from meta_rl.inner import inner_step
    from meta_rl.policies import batch_params
    from meta_rl.returns import compute_advantages
    from meta_rl.trainer import build

    half = evaluate(run, **SIZES, methods="meta", later_lr_scale=0.5, later_kl=None)
    base = first[0].methods["meta"].per_task
    assert half.methods["meta"].per_task[:2] == base[:2]
    assert half.methods["meta"].per_task[2] != base[2]
    assert half.to_dict()["later_lr_scale"] == 0.5 and first[0].to_dict()["later_lr_scale"] == 1
    assert "0.5× the step size" in eval_table(half).caption

    state = load_checkpoint(run)
    config = TrainConfig.from_dict(state["config"]).replace(episodes=SIZES["episodes"])
    setup = build(config)
    try:
        params = batch_params(state["learner"]["meta"], SIZES["tasks"])
        for k, lr in enumerate([config.inner.inner_lr, 0.5 * config.inner.inner_lr]):
            ep = setup.sampler.sample(half.tasks, params, half.rollout_seed + k)
            adv = compute_advantages(ep, config.returns)
            params = inner_step(setup.policy, params, ep, adv, lr, first_order=True)
        final = setup.sampler.sample(half.tasks, params, half.rollout_seed + 2)
    finally:
        setup.close()
    np.testing.assert_allclose(final.task_returns().double().numpy(),
                               half.methods["meta"].per_task[2], rtol=1e-5)


def test_step_scales():
    from meta_rl.inner import step_scales

    assert step_scales(4, 0.5, 0.5) == [1.0, 0.5, 0.25, 0.125]
    assert step_scales(3) == [1.0, 1.0, 1.0] and step_scales(0) == []
    with pytest.raises(ValueError, match="later_lr_decay must be a positive number"):
        step_scales(2, 0.5, 0.0)


def test_later_lr_decay_changes_only_the_steps_after_the_second(run):
    three = {**SIZES, "steps": 3}
    half = evaluate(run, **three, methods="meta", later_lr_scale=0.5)
    decayed = evaluate(run, **three, methods="meta", later_lr_scale=0.5, later_lr_decay=0.25)
    a, b = half.methods["meta"].per_task, decayed.methods["meta"].per_task
    assert b[:3] == a[:3] and b[3] != a[3]
    assert decayed.to_dict()["later_lr_decay"] == 0.25 and half.to_dict()["later_lr_decay"] == 1
    assert "×0.25 more at each later step" in eval_table(decayed).caption


def test_steps_batches_spend_the_env_step_budget_on_whole_episodes(run, first):
    """With ``batch_unit="steps"`` every measurement batch has at least E x H env steps per task;
    an episodes batch at most that. The unit is recorded and shown."""
    budget = SIZES["episodes"] * HORIZON
    steps = evaluate(run, **SIZES, methods="meta", batch_unit="steps")
    spent = np.diff(steps.methods["meta"].env_steps)
    assert steps.to_dict()["batch_unit"] == "steps" and (spent >= budget).all()
    assert first[0].to_dict()["batch_unit"] == "episodes"
    assert (np.diff(first[0].methods["meta"].env_steps) <= budget).all()
    assert "env steps" in eval_table(steps).caption


def test_eval_seeds_skip_reserved_words():
    a, b, c = eval_seeds(7, set())
    assert eval_seeds(7, {a}) == [b, c, eval_seeds(7, set(), count=4)[3]]
    assert all(0 <= s < 2**31 for s in (a, b, c))


def test_mean_ci95_by_hand(monkeypatch):
    mean, half = mean_ci95([1.0, 2.0, 3.0])  # std 1, n 3
    assert mean == 2.0
    if stats._t_distribution() is not None:
        assert half == pytest.approx(4.302652729911275 / math.sqrt(3))
    monkeypatch.setattr(stats, "_t_distribution", lambda: None)
    assert mean_ci95([1.0, 2.0, 3.0])[1] == pytest.approx(1.96 / math.sqrt(3))
    mean, ci = mean_ci95([5.0])
    assert mean == 5.0 and math.isnan(ci)


def test_pretrained_config_spends_the_same_env_steps():
    config = tiny_config(inner_steps=2, algo="reptile", iterations=10)
    pre = pretrained_config(config, 7)
    assert (pre.algo, pre.inner.inner_steps, pre.iterations, pre.outer_name) == (
        "maml", 0, 21, "trpo")
    assert pre.inner.inner_lr == config.inner.inner_lr and pre.seed == config.seed
    assert pretrained_config(tiny_config(outer="adam"), 3).outer_name == "adam"
    # a run that keeps snapshots does not make its baseline keep any
    assert pretrained_config(tiny_config(keep_every=2), 3).run.keep_every == 0


def test_stale_pretrained_cache_is_retrained_and_interrupted_one_resumed(run, first, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = copy / "pretrained" / "checkpoint.pt"
    state = load_checkpoint(ckpt)
    want = dict(state["config"])
    save_checkpoint(ckpt, {**state, "config": {**want, "inner": {**want["inner"], "inner_lr": 0.5}}})
    result = evaluate(copy, **SIZES, methods=["pretrained"])
    assert result.methods["pretrained"].extra["cached"] is False
    assert load_checkpoint(ckpt)["config"] == want

    state = load_checkpoint(ckpt)
    save_checkpoint(ckpt, {**state, "iteration": state["iteration"] - 2})
    messages = []
    evaluate(copy, **SIZES, methods=["pretrained"], progress=messages.append)
    assert any("resuming" in m for m in notes(messages))
    assert load_checkpoint(ckpt)["iteration"] == want["iterations"]


@pytest.mark.parametrize("algo, extra", [("metasgd", {}), ("metasgd", {"rate_lr": 1e-3}),
                                         ("reptile", {})])
def test_other_algorithms_evaluate(tmp_path, algo, extra):
    train(tiny_config(algo=algo, iterations=1, **extra), tmp_path / "run")
    result = evaluate(tmp_path / "run", tasks=3, steps=1, episodes=2,
                      methods=["meta", "random", "pretrained"])
    for m in result.methods.values():
        assert len(m.mean) == 2 and all(math.isfinite(x) for x in m.mean)


def test_report_table_and_training_plot(run, first):
    d = load_eval(first[1]["json"])
    table = eval_table(d)
    assert len(table.columns) == 2 + (SIZES["steps"] + 1) + 2 and table.row_count == len(METHODS)
    # which step size each method used: the run's own, or one chosen on validation tasks
    sizes = {name: m["inner_lr"] for name, m in d["methods"].items() if name != "ppo"}
    assert sizes["meta"] == 0.1 and all(d["methods"][b]["chosen_on"].endswith(")")
                                        for b in ("random", "pretrained"))
    assert {sizes["random"], sizes["pretrained"]} <= {0.1 * f for f in (0.1, 0.3, 1.0, 3.0)}
    out = io.StringIO()
    print_eval(first[0], Console(file=out, width=120))
    assert "pretrained" in out.getvalue() and "±" in out.getvalue()
    path = plot_training(run)
    assert path.name == "training.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_a_model_of_another_revision_is_evaluated_with_a_warning_on_record(run, tmp_path):
    """Navigation2D's goal became a square (revision 2). A model trained on the disc (a
    checkpoint without a revision counts as 1) is still evaluated, on today's tasks, but never
    silently: a warning, the table's caption and eval.json say so. A model of this revision gets
    none of them."""
    kwargs = dict(tasks=2, steps=1, episodes=2, methods="meta")
    messages = []
    same = evaluate(run, progress=messages.append, **kwargs)
    assert (same.env_revision, same.trained_env_revision) == (envs.Navigation2D.revision, 2)
    assert not any("warning" in m for m in notes(messages))
    out = io.StringIO()
    print_eval(same, Console(file=out, width=200))
    assert "revision" not in out.getvalue()

    old = tmp_path / "old"
    shutil.copytree(run, old, ignore=shutil.ignore_patterns("pretrained", "eval*"))
    state = load_checkpoint(old / "checkpoint.pt")
    del state["env_revision"]
    save_checkpoint(old / "checkpoint.pt", state)
    with pytest.warns(UserWarning, match="trained on Navigation2D revision 1, and this "
                                         "version's tasks are revision 2"):
        result = evaluate(old, progress=False, **kwargs)  # silent: a Python warning
    messages = []
    evaluate(old, progress=messages.append, **kwargs)  # with a progress callback: told there
    assert any(m.startswith("warning:") and "revision 1" in m for m in notes(messages))
    d = load_eval(write_eval(result, old)["json"])
    assert (d["env_revision"], d["trained_env_revision"]) == (2, 1)
    out = io.StringIO()
    print_eval(d, Console(file=out, width=200))
    assert ("trained on revision 1 of Navigation2D, and these tasks are revision 2"
            in " ".join(out.getvalue().split()))
    # the same model and tasks: only the record differs
    assert numbers(result.to_dict()) == numbers(same.to_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": 0}, "tasks must be a positive integer, got 0"),
        ({"tasks": 2.5}, "tasks must be"),
        ({"episodes": -1}, "episodes must be a positive integer, got -1"),
        ({"steps": -1}, "steps must be an integer >= 0, got -1"),
        ({"methods": ["meta", "maml"]}, "methods must be a comma-separated list of meta, random"),
        ({"methods": []}, "methods must be a comma-separated list"),
        ({"seed": -3}, r"seed must be an integer >= 0 \(or null for none\), got -3"),
        ({"ppo_tasks": 0}, "ppo_tasks must be a positive integer"),
        ({"later_lr_scale": 0}, "later_lr_scale must be a positive number, got 0"),
        ({"later_lr_scale": float("nan")}, "later_lr_scale must be a positive number"),
        ({"later_lr_decay": -1}, "later_lr_decay must be a positive number, got -1"),
        ({"batch_unit": "frames"}, "batch_unit must be one of episodes, steps.*got 'frames'"),
        ({"iteration": -1}, "iteration must be an integer >= 0, got -1"),
    ],
)
def test_bad_inputs_raise_value_errors(run, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate(run, **{**SIZES, **kwargs})


def test_run_dir_without_checkpoint_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint"):
        evaluate(tmp_path)
    with pytest.raises(ValueError, match="no metrics.jsonl"):
        plot_training(tmp_path)


def test_a_kept_iteration_evaluates_like_a_run_stopped_there(tmp_path):
    """``iteration=N`` evaluates the snapshot: the same numbers as a run trained for N
    iterations, with N recorded."""
    train(tiny_config(iterations=3, keep_every=1), tmp_path / "long")
    train(tiny_config(iterations=2), tmp_path / "short")
    kwargs = dict(tasks=3, steps=1, episodes=2, methods="meta")
    kept = evaluate(tmp_path / "long", iteration=2, **{**kwargs, "methods": "meta,pretrained"})
    kept = kept.to_dict()
    stopped = evaluate(tmp_path / "short", **kwargs).to_dict()
    latest = evaluate(tmp_path / "long", **kwargs).to_dict()
    assert numbers(kept)["meta"] == numbers(stopped)["meta"]
    assert numbers(kept)["meta"] != numbers(latest)["meta"]
    assert kept["methods"]["meta"]["iteration"] == kept["iteration"] == 2
    assert latest["methods"]["meta"]["iteration"] == latest["iteration"] == 3
    assert kept["checkpoint"] == str(tmp_path / "long" / "snapshots" / "iteration-000002.pt")
    assert latest["checkpoint"] == str(tmp_path / "long" / "checkpoint.pt")
    # the snapshot's pretrained baseline is cached beside it, never over the run's own cache
    home = tmp_path / "long" / "snapshots" / "iteration-000002"
    assert kept["methods"]["pretrained"]["dir"] == str(home / "pretrained")
    assert load_checkpoint(home / "pretrained")["iteration"] == 2 * 2
    assert not (tmp_path / "long" / "pretrained").exists()
    with pytest.raises(ValueError, match="no model of iteration 7; it has 1, 2, 3"):
        evaluate(tmp_path / "long", iteration=7, **kwargs)


def test_baselines_choose_their_step_size_on_validation_tasks_and_cache_it(run, first):
    """Each policy-gradient baseline takes the step size of the grid with the best mean return
    over steps 1..K on validation tasks, not on the reported ones, and keeps it for next time."""
    d = first[0].to_dict()
    cache = json.loads((run / "baselines.json").read_text())
    records = {json.loads(key)["method"]: rec for key, rec in cache.items()}
    for name in ("random", "pretrained"):
        scores = {float(lr): v for lr, v in records[name]["validation_score"].items()}
        assert d["methods"][name]["inner_lr"] == max(scores, key=scores.get)
        seed = int(records[name]["chosen_on"].split("seed ")[1].rstrip(")"))
        assert seed not in (first[0].task_seed, first[0].rollout_seed)
    before = (run / "baselines.json").stat().st_mtime_ns
    again = evaluate(run, **SIZES, methods="random", progress=False)
    assert again.methods["random"].per_task == first[0].methods["random"].per_task
    assert (run / "baselines.json").stat().st_mtime_ns == before  # reused, not chosen again


def test_later_steps_are_bounded_by_the_first_steps_kl_unless_told_not_to(run):
    """By default the steps a method was not trained for are bounded (later_kl); with
    later_kl=None they are the paper's plain steps, which here move further."""
    three = {**SIZES, "steps": 3}
    bounded = evaluate(run, **three, methods="meta", progress=False)
    plain = evaluate(run, **three, methods="meta", later_kl=None, progress=False)
    assert bounded.to_dict()["later_kl"] == 0.25 and plain.to_dict()["later_kl"] is None
    a, b = bounded.methods["meta"].per_task, plain.methods["meta"].per_task
    assert a[:2] == b[:2] and a[2] != b[2]  # the trained first step is the same
