"""The ``meta-rl`` command: bad input fails in one line and writes nothing; runs resume exactly;
Ctrl-C leaves a loadable checkpoint; presets load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import envs
from meta_rl.checkpoint import load_checkpoint
from meta_rl.cli import main
from meta_rl.presets import load_yaml_config, preset_names
from meta_rl.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--meta-batch", "3", "--episodes", "3", "--hidden", "8", "--horizon", "10"]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "meta_rl.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--iterations", "2", *TINY, "--out", str(out)]) == 0
    return out


# -- bad input ------------------------------------------------------------------------------------

BAD_TRAIN = {
    "unknown env": (["--env", "NoSuchFamily"], "unknown task family 'NoSuchFamily'"),
    "unknown module path": (["--env", "no_such_module:Fam"], "cannot import module"),
    "unknown algo": (["--algo", "maml2"], "algo must be one of maml, metasgd, reptile, got 'maml2'"),
    "unknown preset": (["--preset", "nav-nope"], "unknown preset 'nav-nope'"),
    "zero iterations": (["--iterations", "0"], "iterations must be a positive integer"),
    "negative lr": (["--inner-lr", "-0.1"], "inner_lr must be a positive number"),
    "zero tasks": (["--meta-batch", "0"], "meta_batch must be a positive integer"),
    "zero episodes": (["--episodes", "0"], "episodes must be a positive integer"),
    "malformed hidden": (["--hidden", "64,x"], "hidden must be a list of positive layer sizes"),
    "outer that does not fit": (["--algo", "reptile", "--outer", "trpo"], "does not fit algo"),
    "missing yaml": (["--config", "nowhere.yaml"], "does not exist"),
    "unknown batch unit": (["--batch-unit", "frames"], "batch_unit must be one of episodes, steps"),
    "lambda above 1": (["--gae-lambda", "1.5"], "gae_lambda must be a number in [0, 1]"),
    "negative discount": (["--gamma", "-0.1"], "gamma must be a number in [0, 1]"),
    "rate lr without learned rates": (["--rate-lr", "0.001"], "rate_lr is for algo metasgd"),
    "zero rate lr": (["--algo", "metasgd", "--rate-lr", "0"], "rate_lr must be a positive"),
    "metasgd without an inner step": (["--algo", "metasgd", "--inner-steps", "0"],
                                      "metasgd needs inner_steps >= 1"),
}


def assert_one_line_error(err: str, expected: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("meta-rl: error:"), err
    assert expected in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(BAD_TRAIN))
def test_bad_train_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    flags, expected = BAD_TRAIN[case]
    out = tmp_path / "run"
    assert main(["train", *flags, *TINY, "--out", str(out)]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert not out.exists()


@pytest.mark.parametrize("text, expected", [
    ("meta_batch: 4\nnot_a_key: 1\n", "unknown config key(s) not_a_key"),
    ("meta_batch: [4\n", "is not valid YAML at line"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("inner_lr: -1\n", "inner_lr must be a positive number"),
    ("hidden: '10,,'\n", "hidden must be"),
])
def test_bad_yaml_is_one_line(text, expected, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert not (tmp_path / "run").exists()


def test_unreadable_yaml_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.mkdir()  # a directory where a file is expected
    assert main(["train", "--config", str(path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "does not exist")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    assert main(["train", "--device", "cuda", *TINY, "--out", str(tmp_path / "run")]) == 2
    assert_one_line_error(capsys.readouterr().err, "CUDA is not available")
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten_without_force(trained, capsys):
    before = snapshot(trained)
    assert main(["train", "--iterations", "1", *TINY, "--out", str(trained)]) == 2
    assert_one_line_error(capsys.readouterr().err, "already holds a run")
    assert snapshot(trained) == before


def test_force_replaces_a_run(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--iterations", "2", *TINY, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["train", "--iterations", "1", *TINY, "--out", str(out), "--force"]) == 0
    assert len(metrics(out)) == 1
    assert (out / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_force_never_deletes_a_folder_that_holds_no_run(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("mine: 1\n")
    (tmp_path / "tensorboard").mkdir()
    before = snapshot(tmp_path)
    assert main(["train", *TINY, "--out", str(tmp_path), "--force"]) == 2
    assert_one_line_error(capsys.readouterr().err, "but no run")
    assert snapshot(tmp_path) == before


def test_damaged_checkpoint_is_one_line(trained, tmp_path, capsys):
    state = load_checkpoint(trained)
    for broken, expected in (({k: v for k, v in state.items() if k != "config"}, "lacks config"),
                             ({**state, "learner": {"params": {"bogus": torch.zeros(1)}}},
                              "does not fit its own config"),
                             ({**state, "format": "meta_rl.checkpoint/1"},
                              "has the retired format meta_rl.checkpoint/1")):
        torch.save(broken, tmp_path / "checkpoint.pt")
        for argv in (["train", "--resume", str(tmp_path), "--iterations", "9"],
                     ["evaluate", str(tmp_path), "--methods", "meta"]):
            assert main(argv) == 2
            assert_one_line_error(capsys.readouterr().err, expected)


def test_resume_drops_a_metrics_line_cut_short(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--iterations", "2", *TINY, "--out", str(out)]) == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "pre_adapt_ret')  # a write killed halfway
    assert main(["train", "--resume", str(out), "--iterations", "3"]) == 0
    assert [r["iteration"] for r in metrics(out)] == [1, 2, 3]


def test_resume_without_or_with_corrupt_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "nothing to resume")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = snapshot(tmp_path)
    assert main(["train", "--resume", str(tmp_path), "--iterations", "3"]) == 2
    assert_one_line_error(capsys.readouterr().err, "corrupt or unreadable")
    assert snapshot(tmp_path) == before


def test_resume_refuses_config_changes(trained, capsys):
    before = snapshot(trained)
    assert main(["train", "--resume", str(trained), "--inner-lr", "0.5"]) == 2
    assert_one_line_error(capsys.readouterr().err, "only --iterations")
    assert snapshot(trained) == before


def test_resume_refuses_a_run_of_another_revision_of_its_family(trained, tmp_path, capsys):
    """Navigation2D's goal changed from a disc to a square (revision 2): a run trained before
    (its checkpoint has no revision, so 1) is another task, and is not continued as this one."""
    import shutil

    import envs

    assert load_checkpoint(trained / "checkpoint.pt")["env_revision"] == envs.Navigation2D.revision == 2
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    state = torch.load(old / "checkpoint.pt", weights_only=False)
    del state["env_revision"]
    torch.save(state, old / "checkpoint.pt")
    before = snapshot(old)
    assert main(["train", "--resume", str(old), "--iterations", "3"]) == 2
    assert_one_line_error(capsys.readouterr().err, "trained on Navigation2D revision 1, and this "
                                                   "version's is 2")
    assert snapshot(old) == before
    # evaluating it is allowed (on today's tasks), with a warning and a note under the table
    assert main(["evaluate", str(old), "--tasks", "2", "--steps", "1", "--episodes", "2",
                 "--methods", "meta"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning:" in out and "trained on Navigation2D revision 1" in out
    assert "note: the model was trained on revision 1 of Navigation2D" in out
    assert json.loads((old / "eval.json").read_text())["trained_env_revision"] == 1


def test_error_in_a_real_process_has_no_traceback(tmp_path):
    proc = run_cli("train", "--env", "NoSuchFamily", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "unknown task family")


# -- runs -----------------------------------------------------------------------------------------


def test_presets_are_valid_configs():
    assert {"navigation2d-maml", "halfcheetahvel-maml", "halfcheetahdir-maml", "antdir-maml",
            "navigation2d-metasgd", "navigation2d-reptile", "quickstart"} <= set(preset_names())
    for name in preset_names():
        config = TrainConfig.from_dict(load_yaml_config(name))
        assert config.env in envs.names()


def test_flags_override_preset(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "navigation2d-metasgd", "--iterations", "1", *TINY,
                 "--gamma", "0.95", "--gae-lambda", "0.9", "--out", str(out)]) == 0
    import yaml

    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["algo"] == "metasgd" and saved["iterations"] == 1
    assert saved["sampling"]["meta_batch"] == 3
    assert saved["returns"]["gamma"] == 0.95 and saved["returns"]["gae_lambda"] == 0.9
    assert saved["trpo"]["max_kl"] == 0.01 and saved["env_kwargs"] == {"horizon": 10}


def test_env_kwargs_flags_add_to_the_presets(tmp_path):
    """--horizon and --frame-skip set one key each of the preset's env_kwargs (issue: the README
    named --frame-skip, which train did not have)."""
    from meta_rl.cli import build_parser
    from meta_rl.flags import given
    from meta_rl.presets import resolve

    args = build_parser().parse_args(["train", "--preset", "halfcheetahdir-maml",
                                      "--frame-skip", "1"])
    config = resolve(args.preset, given(args))
    assert config.env_kwargs == {"horizon": 200, "frame_skip": 1}
    args = build_parser().parse_args(["train", "--env-kwargs", "horizon=7,frame_skip=2",
                                      "--horizon", "9"])
    assert resolve(None, given(args)).env_kwargs == {"horizon": 9, "frame_skip": 2}


@pytest.mark.parametrize("algo", ["maml", "metasgd", "reptile", "metasgd --rate-lr 0.01"])
def test_resume_equals_uninterrupted_run(algo, tmp_path):
    flags = ["--algo", *algo.split(), *TINY, "--seed", "3", "--checkpoint-every", "1"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", "--iterations", "4", *flags, "--out", str(whole)]) == 0
    assert main(["train", "--iterations", "2", *flags, "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--iterations", "4"]) == 0
    a, b = metrics(whole), metrics(split)
    assert [r["iteration"] for r in b] == [1, 2, 3, 4]
    for r in a + b:
        r.pop("wall_s")
    assert a == b
    la, lb = load_checkpoint(whole)["learner"], load_checkpoint(split)["learner"]
    assert la["meta"].keys() == lb["meta"].keys()  # Meta-SGD's learned rates too
    assert all(torch.equal(la["meta"][k], lb["meta"][k]) for k in la["meta"])
    if "--rate-lr" in algo:  # and the rates' own Adam state
        sa, sb = la["outer"]["side"]["state"], lb["outer"]["side"]["state"]
        assert sa.keys() == sb.keys() and all(
            torch.equal(sa[i][name], sb[i][name]) for i in sa for name in sa[i])


def test_sigint_leaves_a_loadable_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "meta_rl.cli", "train", "--iterations", "100000", *TINY,
         "--checkpoint-every", "1000", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        path = out / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"continue with: meta-rl train --resume {out}" in lines[0]
    state = load_checkpoint(out)  # loadable, and holds a whole iteration
    assert state["iteration"] >= 2
    assert len(metrics(out)) >= state["iteration"]
    assert main(["train", "--resume", str(out), "--iterations", str(state["iteration"] + 1)]) == 0
    assert [r["iteration"] for r in metrics(out)] == list(range(1, state["iteration"] + 2))


def test_envs_and_check_env(capsys):
    import envs

    assert main(["envs"]) == 0
    listing = capsys.readouterr().out
    assert all(name[:12] in listing for name in envs.names())
    assert main(["check-env", "Navigation2D"]) == 0
    assert "passed" in capsys.readouterr().out
    assert main(["check-env", "Nope"]) == 2


def test_envs_prints_a_familys_text_literally(capsys, monkeypatch):
    """A family's ``varies`` (and an install hint like ``gymnasium[mujoco]``) is text, not rich
    markup: brackets are printed, and a stray closing tag is no error."""
    from envs.navigation import Navigation2D

    text = "goal ~ U[-0.5, 0.5], see [red]this[/red] and pip install gymnasium[mujoco] [/x]"
    monkeypatch.setattr(Navigation2D, "varies", text)
    monkeypatch.setenv("COLUMNS", "400")  # one line per row
    assert main(["envs"]) == 0
    assert text in capsys.readouterr().out


def test_evaluate_writes_json_png_and_table(trained, capsys):
    assert main(["evaluate", str(trained), "--tasks", "3", "--steps", "1", "--episodes", "2",
                 "--ppo-tasks", "1"]) == 0
    out = capsys.readouterr().out
    assert "meta" in out and "pretrained" in out and "ppo" in out
    result = json.loads((trained / "eval.json").read_text())
    assert set(result["methods"]) == {"meta", "random", "pretrained", "ppo"}
    assert result["steps"] == [0, 1] and result["tasks"] == 3
    assert (trained / "adaptation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags, expected", [
    (["--tasks", "0"], "tasks must be a positive integer"),
    (["--episodes", "-1"], "episodes must be a positive integer"),
    (["--steps", "x"], "steps must be an integer >= 0"),
    (["--methods", "meta,magic"], "methods must be a comma-separated list of meta, random, pretrained, ppo"),
    (["--later-lr-decay", "0"], "later_lr_decay must be a positive number"),
    (["--batch-unit", "frames"], "batch_unit must be one of episodes, steps"),
    (["--out", str(ROOT / "README.md")], "is a file; give a folder"),
])
def test_bad_evaluate_input_is_one_line(flags, expected, trained, capsys):
    before = snapshot(trained)
    assert main(["evaluate", str(trained), *flags]) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert snapshot(trained) == before


def test_evaluate_out_keeps_the_runs_own_evaluation(trained, tmp_path, capsys):
    """--out writes elsewhere (the run's eval.json is untouched); the batch unit and the step-size
    schedule are recorded."""
    before = snapshot(trained)
    other = tmp_path / "steps-eval"
    assert main(["evaluate", str(trained), "--tasks", "2", "--steps", "3", "--episodes", "2",
                 "--methods", "meta", "--batch-unit", "steps", "--later-lr-scale", "0.5",
                 "--later-lr-decay", "0.5", "--out", str(other)]) == 0
    assert snapshot(trained) == before
    result = json.loads((other / "eval.json").read_text())
    assert result["batch_unit"] == "steps" and result["later_lr_decay"] == 0.5
    assert (other / "adaptation.png").exists()
    assert "env steps" in capsys.readouterr().out


def test_paths_that_look_like_rich_markup_are_printed_as_they_are(tmp_path, capsys):
    """Rich reads ``[red]`` as a style and ``[/x]`` as a closing tag (an error); a run folder of
    that name is printed literally by train and evaluate, and neither fails."""
    def printed():  # rich folds long lines: compare without whitespace
        return "".join(capsys.readouterr().out.split())

    run = tmp_path / "seed[red]1[/red]" / "x[/x]"
    assert main(["train", "--iterations", "1", *TINY, "--out", str(run)]) == 0
    out = printed()
    assert f"runwrittento{run}" in out and f"out{run}" in out
    assert main(["evaluate", str(run), "--tasks", "2", "--steps", "1", "--episodes", "1",
                 "--methods", "meta"]) == 0
    assert f"wrote{run / 'eval.json'}" in printed()


def test_evaluate_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert_one_line_error(capsys.readouterr().err, "no checkpoint at")


def test_keep_every_and_evaluate_a_kept_iteration(tmp_path, capsys):
    """train --keep-every keeps snapshots; evaluate --iteration writes beside the snapshot and
    leaves the run's own evaluation alone; an iteration not kept is one line naming those kept."""
    out = tmp_path / "run"
    assert main(["train", "--iterations", "3", *TINY, "--keep-every", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["iteration-000002.pt"]
    sizes = ["--tasks", "2", "--steps", "1", "--episodes", "2", "--methods", "meta"]
    assert main(["evaluate", str(out), *sizes]) == 0
    before = snapshot(out)
    assert main(["evaluate", str(out), *sizes, "--iteration", "2"]) == 0
    written = out / "snapshots" / "iteration-000002"
    assert json.loads((written / "eval.json").read_text())["methods"]["meta"]["iteration"] == 2
    beside = str(written.relative_to(out)) + "/"
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(beside)} == before
    capsys.readouterr()
    assert main(["evaluate", str(out), *sizes, "--iteration", "1"]) == 2
    assert_one_line_error(capsys.readouterr().err, "no model of iteration 1; it has 2, 3")
    assert main(["train", "--iterations", "1", *TINY, "--out", str(out), "--force"]) == 0
    assert not (out / "snapshots").exists()  # --force replaces the old run's snapshots too
