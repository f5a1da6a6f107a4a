"""Data-parallel meta-training over ranks (``torchrun``, gloo on the CPU): the same numbers as one
process, a run folder written by rank 0 that resumes on another number of ranks, and a failing
rank that ends the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from meta_rl.distributed import SINGLE, Shard
from tests.distributed_cases import CASES, fixed_batch, one_meta_iteration, one_outer_step

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def run(args: list[str], timeout: float = 300, env: dict | None = None):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                               **(env or {})})


def test_shares_cover_the_tasks_once_and_differ_by_at_most_one():
    for total in (1, 2, 5, 40):
        for world in (1, 2, 3):
            parts = [Shard(rank, world).part(total) for rank in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == total
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [stop - start for start, stop in parts]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("name", ["Navigation2D", "tests.faulty:Faulty"])
def test_a_slice_samples_what_the_whole_batch_gives_its_rows(name):
    """Envs seeded and action noise drawn as the whole batch's rows: a rank's slice of the tasks
    gets exactly the episodes the whole batch gives them (batched and worker samplers)."""
    from meta_rl.config import TrainConfig
    from meta_rl.policies import batch_params
    from meta_rl.trainer import build

    config = TrainConfig.from_dict({"env": name, "env_kwargs": {"horizon": 10}, "episodes": 3,
                                    "hidden": (8,), "num_workers": 2})
    setup = build(config)
    try:
        tasks = setup.family.sample_tasks(5, seed=1)
        meta = setup.policy.init_params(torch.Generator().manual_seed(0))
        whole = setup.sampler.sample(tasks, batch_params(meta, 5), seed=11)
        part = setup.sampler.sample(tasks[2:4], batch_params(meta, 2), seed=11, rows=(2, 5))
    finally:
        setup.close()
    for a, b in zip(part, whole):
        assert a is b is None or torch.equal(a, b[2:4])


@pytest.mark.slow
def test_two_ranks_compute_what_one_process_computes(tmp_path):
    result = run([*TORCHRUN, "tests/distributed_check.py", str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    torch.set_num_threads(1)
    for name, case in CASES.items():
        got = torch.load(tmp_path / f"{name}.pt")
        grad, params = one_outer_step(case, SINGLE, fixed_batch(case))
        # float64: the sums' order moves the last bits; ten CG iterations amplify them to 1e-10
        if grad is not None:  # the combined meta-gradient (all but Reptile have one)
            torch.testing.assert_close(got["grad"], grad, rtol=1e-9, atol=1e-14, msg=name)
        torch.testing.assert_close(got["params"], params, rtol=1e-8, atol=1e-8, msg=name)
        params, metrics = one_meta_iteration(case)  # sampling included, each rank its slice
        torch.testing.assert_close(got["iteration"][0], params, rtol=1e-8, atol=1e-8, msg=name)
        for key, value in metrics.items():  # (CG's residual is the solve's noise floor)
            if key != "cg_residual":
                assert got["iteration"][1][key] == pytest.approx(value, rel=1e-8, abs=1e-10), key


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_two_rank_run_writes_one_run_that_resumes_on_two_ranks_and_then_on_one(tmp_path):
    out = tmp_path / "run"
    flags = ["--iterations", "3", "--meta-batch", "5", "--episodes", "3", "--hidden", "8",
             "--horizon", "10", "--checkpoint-every", "1"]
    result = run([*TORCHRUN, "-m", "meta_rl", "train", *flags, "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["iteration"] for r in metrics(out)] == [1, 2, 3]
    assert all(r["world_size"] == 2 for r in metrics(out))
    assert sorted(p.name for p in out.glob("*.pt")) == ["checkpoint.pt"]
    assert result.stdout.count("run written to") == 1  # rank 0 alone writes the console
    result = run([*TORCHRUN, "-m", "meta_rl", "train", "--resume", str(out), "--iterations", "5"])
    assert result.returncode == 0, result.stderr[-3000:]
    result = run([sys.executable, "-m", "meta_rl", "train", "--resume", str(out),
                  "--iterations", "6"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(out)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.get("world_size", 1) for r in rows] == [2, 2, 2, 2, 2, 1]


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_a_message_naming_it(tmp_path):
    started = time.monotonic()
    result = run([*TORCHRUN, "-m", "meta_rl", "train", "--env", "tests.faulty:Faulty",
                  "--iterations", "5", "--meta-batch", "4", "--episodes", "2", "--hidden", "8",
                  "--num-workers", "1", "--out", str(tmp_path / "run")],
                 env={"FAULTY_BOOM_RANK": "1"}, timeout=120)
    assert result.returncode != 0
    assert time.monotonic() - started < 60
    assert "meta-rl: rank 1: training stopped at iteration 1" in result.stderr
    assert "the simulator crashed on rank 1" in result.stderr
