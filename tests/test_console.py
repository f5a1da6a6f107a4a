"""What a user sees: progress as plain lines under a pipe, names and commands never cut, every
default in ``--help``, README commands that parse, and labels only for the methods that ran."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from meta_rl.progress import ConsoleProgress, ProgressEvent

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--meta-batch", "3", "--episodes", "3", "--hidden", "8", "--horizon", "10"]


def meta_rl(*args: str, columns: int = 80, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "meta_rl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_plain_progress_lines_carry_every_field_and_come_every_few_seconds(monkeypatch):
    clock = iter([0.0, 1.0, 2.0, 6.5, 7.0, 9.0, 10.0, 11.0])
    monkeypatch.setattr("meta_rl.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()
    display = ConsoleProgress(stream=out, every=5.0)
    for done in range(6):
        display(ProgressEvent("meta-training", done, 5 if done < 6 else 5, "iteration",
                              {"post": f"{-10.0 - done:.2f}", "env steps/s": "12,345"}))
    lines = out.getvalue().splitlines()
    # the first, the first after 5 s, and the last (done == total): not one per event
    assert [line.split(":")[1].split()[0] for line in lines] == ["0/5", "3/5", "5/5"]
    assert lines[1].startswith("meta-training: 3/5 iterations (60%), 6s elapsed, ETA 4s")
    assert lines[1].endswith("post -13.00, env steps/s 12,345")
    display(ProgressEvent("pretrained", note="pretrained: reusing runs/x/pretrained"))
    assert out.getvalue().splitlines()[-1] == "pretrained: reusing runs/x/pretrained"
    display(ProgressEvent("meta", 6, 6, "batch"))
    assert out.getvalue().splitlines()[-1].startswith("meta: 6/6 batches (100%)")


def test_train_under_a_pipe_prints_whole_progress_lines_and_an_uncut_hint(tmp_path):
    out = tmp_path / ("a-long-folder-name-" * 3) / "run"
    result = meta_rl("train", "--iterations", "3", *TINY, "--out", str(out), columns=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    progress = [line for line in lines if line.startswith("meta-training:")]
    assert progress[0].startswith("meta-training: 0/3 iterations (0%)")
    assert re.match(r"meta-training: 3/3 iterations \(100%\), \d+s elapsed, pre -?\d+\.\d\d, "
                    r"post -?\d+\.\d\d, env steps/s [\d,]+, s/it \d+\.\d\d$", progress[-1])
    assert f"evaluate it with: meta-rl evaluate {out}" in lines  # one line, whole, copyable
    assert all("…" not in line for line in lines)


def test_envs_names_are_never_cut_at_60_columns():
    import envs

    result = meta_rl("envs", columns=60)
    assert result.returncode == 0
    names = {line.split("│")[1].strip() for line in result.stdout.splitlines()
             if line.startswith("│") and line.split("│")[1].strip()}
    assert set(envs.names()) <= names


def test_help_shows_every_default():
    from meta_rl.config import EvalConfig, TrainConfig

    text = " ".join(meta_rl("train", "--help", columns=200).stdout.split())
    for name, value in (("iterations", TrainConfig().iterations),
                        ("meta-batch", TrainConfig().sampling.meta_batch),
                        ("episodes", TrainConfig().sampling.episodes),
                        ("inner-lr", TrainConfig().inner.inner_lr),
                        ("max-kl", TrainConfig().trpo.max_kl)):
        assert re.search(rf"--{name} \S+ .*?\(default: {value}\)", text), name
    text = " ".join(meta_rl("evaluate", "--help", columns=200).stdout.split())
    for name, value in (("tasks", EvalConfig().tasks), ("steps", EvalConfig().steps),
                        ("episodes", EvalConfig().episodes)):
        assert re.search(rf"--{name} \S+ .*?built in: {value}\)", text), name


def readme_commands() -> list[list[str]]:
    """Every ``meta-rl ...``, ``torchrun ... -m meta_rl ...`` and ``python scripts/....py ...``
    command in the README's and the docs' bash blocks and inline code. A mention (no argument after the subcommand) or a
    grammar (``[--preset P]``, ``DIR``: brackets or placeholders in capitals) is not a command."""
    commands = []
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = path.read_text()
        lines = [line for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
                 for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`((?:meta-rl|python scripts/\w+\.py) [^`]*)`", " ".join(text.split()))
        for line in lines:
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(part)
                if words[:1] == ["torchrun"] and "meta_rl" in words:  # torchrun ... -m meta_rl
                    words = ["meta-rl", *words[words.index("meta_rl") + 1:]]
                is_command = words[:1] == ["meta-rl"] or words[1:2] and words[1].startswith(
                    "scripts/")
                if is_command and len(words) >= 3 and not re.search(r"\[|\b[A-Z]+\b", part):
                    commands.append(words)
    return commands


def test_readme_and_docs_commands_parse():
    import importlib.util

    from meta_rl.cli import build_parser

    commands = readme_commands()
    assert len(commands) >= 8
    parsers = {}
    for words in commands:
        if words[0] == "meta-rl":
            build_parser().parse_args(words[1:])
            continue
        script = ROOT / words[1]
        if script not in parsers:
            spec = importlib.util.spec_from_file_location(script.stem, script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            parsers[script] = module
        module = parsers[script]
        if hasattr(module, "parse"):  # reproduce.py: parses and checks every config
            module.parse(words[2:])
        else:
            with pytest.raises(SystemExit) as exc:  # argparse: --help exits 0 after parsing
                module.main([*words[2:], "--help"])
            assert exc.value.code == 0, words


def test_labels_name_only_the_methods_that_ran(tmp_path):
    from meta_rl.evaluation import evaluate
    from meta_rl.report import eval_table, write_eval

    run = tmp_path / "run"
    assert meta_rl("train", "--iterations", "1", *TINY, "--out", str(run)).returncode == 0
    result = evaluate(run, tasks=2, steps=1, episodes=2, methods="meta,random", progress=False)
    caption = eval_table(result).caption
    assert "pretrain" not in caption and "PPO" not in caption
    write_eval(result, tmp_path / "eval")
    data = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(data["methods"]) == {"meta", "random"}
    from meta_rl import report

    labels = []
    real = report.figure

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        labels.append(fig)
        return fig

    report.figure = spy
    try:
        report.plot_adaptation(data, tmp_path / "a.png")
    finally:
        report.figure = real
    axes = labels[0].axes[0]
    assert "PPO" not in axes.get_xlabel()
    assert all("PPO" not in t.get_text() and "pretrained" not in t.get_text()
               for t in axes.get_legend().get_texts())
    out = io.StringIO()
    report.print_eval(result, Console(file=out, width=200))
    assert "pretrain" not in out.getvalue() and "ppo" not in out.getvalue().lower()


def test_an_eval_table_in_a_log_file_never_cuts_a_number(tmp_path, monkeypatch):
    """Under a pipe (no terminal, no COLUMNS) rich would lay the table out at 80 columns and cut
    five steps' cells to "-39.…"; print_eval widens a non-terminal console instead."""
    from meta_rl.evaluation import evaluate
    from meta_rl.report import print_eval

    run = tmp_path / "run"
    assert meta_rl("train", "--iterations", "1", *TINY, "--out", str(run)).returncode == 0
    result = evaluate(run, tasks=2, steps=5, episodes=2, methods="meta,random", progress=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    print_eval(result, Console(file=out))
    table = out.getvalue()
    assert "…" not in table
    assert all(f"step {k}" in table for k in range(6))
    assert all(f"{m.mean[5]:.2f} ± {m.ci95[5]:.2f}" in table for m in result.methods.values())
