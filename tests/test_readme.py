"""The README's promises: its custom-family example meta-trains via ``module:Class``, and CI runs
the README's test command."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_has_two_commands_and_ci_runs_the_second():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "meta-rl train" in commands[0] and "meta-rl evaluate" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_custom_family_example_checks_and_meta_trains(tmp_path):
    (example,) = [b for b in code_blocks("python") if b.startswith("# my_families.py")]
    (tmp_path / "my_families.py").write_text(example)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "meta_rl.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    check = cli("check-env", "my_families:LineGoal")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "passed" in check.stdout
    train = cli("train", "--env", "my_families:LineGoal", "--iterations", "3", "--meta-batch", "4",
                "--episodes", "4", "--hidden", "16", "--out", "run")
    assert train.returncode == 0, train.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["post_adapt_return"]) for r in records)
    # 4 tasks x 4 episodes x 50 steps, for the inner step and for validation
    assert records[-1]["env_steps"] == 3 * 2 * 4 * 4 * 50
