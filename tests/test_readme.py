"""The README's promises: its examples run as written (the custom families of
docs/task-families.md check and meta-train via ``module:Class``, the API snippets run), CI runs
the README's test command, and docs/configuration.md lists today's settings."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FAMILIES = (ROOT / "docs" / "task-families.md").read_text()  # the README's custom-family guide


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README + FAMILIES, flags=re.S)


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_two_commands_and_ci_runs_the_second():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "meta-rl train" in commands[0] and "meta-rl evaluate" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "meta_rl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def example(first_line: str) -> str:
    (block,) = [b for b in code_blocks("python") if b.startswith(first_line)]
    return block


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_custom_family_example_checks_and_meta_trains(tmp_path):
    (tmp_path / "my_families.py").write_text(example("# my_families.py"))
    check = cli(tmp_path, "check-env", "my_families:LineGoal")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "passed" in check.stdout
    train = cli(tmp_path, "train", "--env", "my_families:LineGoal", "--iterations", "3",
                "--meta-batch", "4", "--episodes", "4", "--hidden", "16", "--out", "run")
    assert train.returncode == 0, train.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["post_adapt_return"]) for r in records)
    # 4 tasks x 4 episodes x 50 steps, for the inner step and for validation
    assert records[-1]["env_steps"] == 3 * 2 * 4 * 4 * 50


def test_batched_family_example_passes_every_check_and_meta_trains(tmp_path):
    (tmp_path / "my_batched.py").write_text(example("# my_batched.py"))
    check = cli(tmp_path, "check-env", "my_batched:Drift")
    assert check.returncode == 0, check.stdout + check.stderr
    for name in ("batched contract", "batched matches make_env", "seed determinism"):
        assert f"[ok] {name}" in check.stdout
    train = cli(tmp_path, "train", "--env", "my_batched:Drift", "--iterations", "2",
                "--meta-batch", "3", "--episodes", "3", "--hidden", "8", "--out", "run")
    assert train.returncode == 0, train.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and records[-1]["env_steps"] == 2 * 2 * 3 * 3 * 50


def test_meta_gradient_example_runs_and_gives_every_meta_parameter_a_gradient(tmp_path):
    code = example("import torch\nimport envs") + """
assert set(grads) == set(meta) and any(k.startswith("lr/") for k in grads)
assert all(g.dtype == torch.float64 and bool(torch.isfinite(g).all()) for g in grads.values())
assert any(float(g.abs().max()) > 0 for g in grads.values())
print("ok")
"""
    result = run_python(code, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.slow
def test_api_example_trains_and_evaluates(tmp_path):
    result = run_python(example("from meta_rl import TrainConfig, Trainer, evaluate"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "random" in result.stdout and "meta" in result.stdout
    lines = (tmp_path / "runs" / "api" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10


def test_configuration_page_lists_todays_settings():
    from meta_rl.config import reference

    assert (ROOT / "docs" / "configuration.md").read_text() == reference() + "\n", (
        "regenerate docs/configuration.md with the command it names")
