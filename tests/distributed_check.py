"""Run by ``torchrun --standalone --nproc-per-node 2 tests/distributed_check.py OUT`` from
tests/test_distributed.py: on each rank, the combined meta-gradient and the meta-parameters after
one outer step (on fixed episodes, and after a whole meta-iteration that samples its own); rank 0
saves them to ``OUT/<case>.pt`` for the test to compare with one process's."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meta_rl import distributed  # noqa: E402
from tests.distributed_cases import CASES, fixed_batch, one_meta_iteration, one_outer_step  # noqa: E402


def main(out: Path) -> None:
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    shard = distributed.current()
    torch.set_num_threads(1)
    for name, case in CASES.items():
        grad, params = one_outer_step(case, shard, fixed_batch(case))
        iteration = one_meta_iteration(case, shard)
        if shard.rank == 0:
            torch.save({"grad": grad, "params": params, "iteration": iteration},
                       out / f"{name}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
