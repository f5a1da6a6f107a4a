"""scripts/reproduce.py end to end on one-iteration runs: the later step sizes are chosen on
validation tasks, only the chosen schedule is run on the reported tasks, the flags are those of
``meta-rl train``, and the table goes into the output folder, never into the docs."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import torch

from meta_rl.checkpoint import load_checkpoint, snapshot_iterations

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schedule_is_chosen_on_validation_tasks(reproduce, tmp_path):
    threads = torch.get_num_threads()
    runs = tmp_path / "runs"
    results = runs / "results.md"
    docs = (ROOT / "docs" / "results.md").read_bytes()
    try:
        assert reproduce.main(["navigation2d", "--algos", "maml", "--seeds", "3",
                               "--iterations", "1", "--eval-tasks", "3", "--eval-episodes", "2",
                               "--out", str(runs)]) == 0
    finally:
        torch.set_num_threads(threads)
    run = json.loads((runs / "navigation2d-summary.json").read_text())["maml"][0]
    tried = run["validation"]
    assert [(t["later_lr_scale"], t["later_lr_decay"]) for t in tried] == list(reproduce.LR_GRID)
    best = max(tried, key=lambda t: statistics.mean(t["validation"][2:]))
    assert (run["later_lr_scale"], run["later_lr_decay"]) == (
        best["later_lr_scale"], best["later_lr_decay"])

    reported = json.loads((runs / "navigation2d-maml-s3" / "eval.json").read_text())
    assert reported["seed"] == 3 and reported["batch_unit"] == "steps"
    assert (reported["later_lr_scale"], reported["later_lr_decay"]) == (
        run["later_lr_scale"], run["later_lr_decay"])
    assert reported["methods"]["meta"]["mean"] == run["meta"]
    # the validation tasks are other tasks than the reported ones
    assert all(t["validation"][0] != run["meta"][0] for t in tried)

    text = results.read_text()
    sizes = reproduce.schedule(3, run["later_lr_scale"], run["later_lr_decay"])
    assert f"chosen per run among {len(reproduce.LR_GRID)} schedules" in text
    assert f"| {sizes} |" in text
    assert (ROOT / "docs" / "results.md").read_bytes() == docs


def test_keep_every_reaches_a_new_and_a_resumed_run(reproduce, tmp_path):
    """--keep-every keeps earlier models of a run it trains, and of a run it resumes: that is
    how the HalfCheetahDir runs were taken further and their iterations compared."""
    threads = torch.get_num_threads()
    runs = tmp_path / "runs"
    common = ["navigation2d", "--algos", "reptile", "--eval-tasks", "2", "--eval-episodes", "2",
              "--eval-steps", "1", "--eval-later-lr-scale", "1", "--out", str(runs)]
    try:
        assert reproduce.main([*common, "--seeds", "0", "--iterations", "2",
                               "--keep-every", "2"]) == 0
        assert reproduce.main([*common, "--seeds", "1", "--iterations", "1"]) == 0
        assert reproduce.main([*common, "--seeds", "1", "--iterations", "3",
                               "--keep-every", "2", "--threads", "1"]) == 0
        # a resumed run keeps its own keep_every when none is given
        assert reproduce.main([*common, "--seeds", "1", "--iterations", "4"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert snapshot_iterations(runs / "navigation2d-reptile-s0") == [2]
    assert snapshot_iterations(runs / "navigation2d-reptile-s1") == [2, 4]
    state = load_checkpoint(runs / "navigation2d-reptile-s1")
    assert state["iteration"] == 4 and state["config"]["run"]["threads"] == 1


def test_frame_skip_reaches_the_run_and_its_table(reproduce, tmp_path, monkeypatch):
    """--frame-skip trains with that time step (evaluation builds the env from the run's
    config), in a run folder of its own: a Gymnasium-timed run of the same seed is never reused
    in its place."""
    pytest.importorskip("mujoco")
    preset = reproduce.load_yaml_config

    def small(name):  # the shipped preset at a test's size
        return {**preset(name), "meta_batch": 2, "episodes": 1}

    monkeypatch.setattr(reproduce, "load_yaml_config", small)
    threads = torch.get_num_threads()
    runs = tmp_path / "runs"
    try:
        assert reproduce.main(["halfcheetahdir", "--algos", "maml", "--seeds", "0",
                               "--iterations", "1", "--frame-skip", "1", "--eval-tasks", "2",
                               "--eval-episodes", "1", "--eval-steps", "1",
                               "--eval-later-lr-scale", "1", "--out", str(runs)]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in runs.iterdir() if p.is_dir()] == ["halfcheetahdir-maml-s0-frame_skip1"]
    config = load_checkpoint(runs / "halfcheetahdir-maml-s0-frame_skip1")["config"]
    assert config["env_kwargs"] == {"horizon": 200, "frame_skip": 1}
    assert "## halfcheetahdir, frame_skip 1: MAML" in (runs / "results.md").read_text()


def test_changed_settings_reach_the_run_and_its_table(reproduce, tmp_path):
    """--fisher-fraction, --inner-lr and --gae-lambda train with those values, in a run folder
    of their own (a run of the preset's settings is never reused in its place), and the table's
    heading names them."""
    threads = torch.get_num_threads()
    runs = tmp_path / "runs"
    try:
        assert reproduce.main(["navigation2d", "--algos", "maml", "--seeds", "0",
                               "--iterations", "1", "--inner-lr", "0.5", "--gae-lambda", "0.95",
                               "--fisher-fraction", "1", "--eval-tasks", "2",
                               "--eval-episodes", "1", "--eval-steps", "1",
                               "--eval-later-lr-scale", "1", "--threads", "1",
                               "--out", str(runs)]) == 0
    finally:
        torch.set_num_threads(threads)
    folder = "navigation2d-maml-s0-gae_lambda0.95-inner_lr0.5-fisher_fraction1"
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [folder]  # threads: not named
    config = load_checkpoint(runs / folder)["config"]
    assert (config["trpo"]["fisher_fraction"], config["inner"]["inner_lr"],
            config["returns"]["gae_lambda"]) == (1, 0.5, 0.95)
    heading = "## navigation2d, gae_lambda 0.95, inner_lr 0.5, fisher_fraction 1: MAML"
    assert heading in (runs / "results.md").read_text()


@pytest.mark.parametrize("value, text", [(0.5, "0.5"), (1.0, "1"), (1e-05, "1e-05"),
                                         (0.1000001, "0.1000001")])
def test_a_setting_is_named_exactly_and_briefly(reproduce, value, text):
    assert reproduce.number(value) == text


@pytest.mark.parametrize("target, flag, value, message", [
    ("navigation2d", "--gae-lambda", "1.5", "gae_lambda must be a number in [0, 1], got 1.5"),
    ("navigation2d", "--inner-lr", "0", "inner_lr must be a positive number, got 0"),
    ("navigation2d", "--inner-lr", "nan", "inner_lr must be a positive number, got nan"),
    ("navigation2d", "--fisher-fraction", "2", "fisher_fraction must be a number in (0, 1], got 2"),
    ("navigation2d", "--keep-every", "-1", "keep_every must be an integer >= 0"),
    ("navigation2d", "--iterations", "0", "iterations must be a positive integer, got 0"),
    ("navigation2d", "--seeds", "0,-1", "seed must be an integer >= 0, got -1"),
    ("navigation2d", "--threads", "0", "threads must be a positive integer"),
    ("navigation2d", "--frame-skip", "1", "unexpected keyword argument 'frame_skip'"),
    ("halfcheetahdir", "--frame-skip", "0", "frame_skip must be a positive integer, got 0"),
    ("navigation2d", "--eval-steps", "1", "choosing the later step size needs --eval-steps >= 2"),
])
def test_bad_setting_is_refused_before_training(reproduce, tmp_path, capsys, target, flag, value,
                                                message):
    with pytest.raises(SystemExit) as exc:
        reproduce.main([*target.split(), flag, value, "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("algos, value, message", [
    ("metasgd", "0", "rate_lr must be a positive number (or null for none), got 0"),
    ("maml,metasgd", "0.001", "rate_lr is for algo metasgd"),
])
def test_bad_rate_lr_is_refused_before_training(reproduce, tmp_path, capsys, algos, value,
                                                message):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["navigation2d", "--algos", algos, "--rate-lr", value,
                        "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_ctrl_c_is_one_line_and_exit_130(reproduce, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "train", interrupted)
    assert reproduce.cli(["navigation2d", "--algos", "maml", "--seeds", "0", "--out",
                          str(tmp_path / "runs")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "same command goes on" in err
    assert not (tmp_path / "runs" / "results.md").exists()


def test_a_run_of_another_revision_of_the_family_is_not_reused(reproduce, tmp_path):
    """The same config trained on an older revision of Navigation2D (the disc goal) is another
    experiment: reproduce.py neither reuses nor resumes it, and says so."""
    from rich.console import Console

    from meta_rl.config import TrainConfig
    from meta_rl.trainer import Trainer

    config = TrainConfig.from_dict(dict(iterations=1, meta_batch=2, episodes=2, hidden=(4,),
                                        env_kwargs={"horizon": 5}, threads=1))
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(config, out)
        trainer.train()
        trainer.close()
        reproduce.train(config, out, Console(quiet=True))  # same revision: reused
        state = torch.load(out / "checkpoint.pt", weights_only=False)
        state["env_revision"] = 1
        torch.save(state, out / "checkpoint.pt")
        for iterations in (1, 2):  # reused, or resumed
            again = TrainConfig.from_dict({"iterations": iterations}, base=config)
            with pytest.raises(SystemExit, match="revision 1, and this version's is 2"):
                reproduce.train(again, out, Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
