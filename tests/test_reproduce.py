"""scripts/reproduce.py end to end on a one-iteration run: the later step sizes are chosen on
validation tasks, and only the chosen schedule is run on the reported tasks."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schedule_is_chosen_on_validation_tasks(reproduce, tmp_path):
    threads = torch.get_num_threads()
    results, runs = tmp_path / "results.md", tmp_path / "runs"
    try:
        assert reproduce.main(["navigation2d", "--algos", "maml", "--seeds", "3",
                               "--iterations", "1", "--tasks", "3", "--episodes", "2",
                               "--out", str(runs), "--results", str(results)]) == 0
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
    assert "chosen per run among 8 schedules" in text and f"| {sizes} |" in text
