"""Throughput benchmarks, one subcommand each; figures go to docs/benchmarks.md with their command.

    python scripts/benchmark.py envs [--device cpu|cuda] [--threads N] [--repeats R]

``envs``: environment steps per second of batched Navigation2D under a random policy (actions
drawn by torch on the env's device every step) at T*E = 400, 4,000 and 40,000, on the CPU and,
when there is one, the GPU; and of one raw Gymnasium HalfCheetahVel env, for reference.

Each figure is the best of ``--repeats`` timed runs after a warm-up run. To add a subcommand,
write ``add_<name>_parser(subparsers)`` that sets ``run=<function(args) -> int>`` and list it in
``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import envs  # noqa: E402

# -- shared helpers --------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Global RNGs are seeded here, in scripts, and nowhere in library code."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def best_time(run: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    """Best wall time of ``repeats`` calls of ``run`` after one warm-up call."""
    run()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


# -- envs ------------------------------------------------------------------------------------------

#: (tasks, envs per task) for T*E = 400, 4,000, 40,000
NAVIGATION_SIZES = ((20, 20), (40, 100), (200, 200))


def navigation_rate(num_tasks: int, envs_per_task: int, device: str, repeats: int) -> float:
    """Env steps/s of one batched Navigation2D episode (reset + 100 steps) with random actions."""
    family = envs.make("Navigation2D")
    env = family.make_batched(family.sample_tasks(num_tasks, seed=0), envs_per_task, device)
    shape = (num_tasks, envs_per_task, 2)

    def episode():
        env.reset(seed=0)
        for _ in range(env.horizon):
            env.step(torch.randn(shape, device=device))

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return num_tasks * envs_per_task * env.horizon / best_time(episode, repeats, sync)


def half_cheetah_rate(repeats: int, steps: int = 1000) -> float:
    """Env steps/s of one raw Gymnasium HalfCheetahVel env (actions sampled beforehand)."""
    family = envs.make("HalfCheetahVel")
    env = family.make_env(family.sample_tasks(1, seed=0)[0])
    actions = np.random.uniform(-1, 1, (steps, 6)).astype(np.float32)

    def run():
        env.reset(seed=0)
        for action in actions:
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return steps / best_time(run, repeats, lambda: None)


def run_envs(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device; use --device cpu",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    console = Console()
    table = Table(title="Environment steps per second", caption=machine())
    for column in ("env", "device", "T x E", "steps/s", "time per step"):
        table.add_column(column, justify="left" if column in ("env", "device") else "right")
    for device in devices:
        for T, E in NAVIGATION_SIZES:
            rate = navigation_rate(T, E, device, args.repeats)
            table.add_row("Navigation2D (batched, random policy)", device, f"{T * E:,}",
                          f"{rate / 1e6:,.1f} M", f"{T * E / rate * 1e6:,.1f} us")
    rate = half_cheetah_rate(args.repeats)
    table.add_row("HalfCheetahVel (one Gymnasium env)", "cpu", "1", f"{rate:,.0f}",
                  f"{1e6 / rate:,.1f} us")
    console.print(table)
    return 0


def add_envs_parser(subparsers) -> None:
    p = subparsers.add_parser("envs", help="env steps/s: batched Navigation2D, raw HalfCheetahVel")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="only this device (default: cpu, and cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed runs; the best is kept")
    p.set_defaults(run=run_envs)


# -- dispatch --------------------------------------------------------------------------------------

#: subcommand name -> function adding its parser (which sets ``run``)
SUBCOMMANDS: dict[str, Callable] = {"envs": add_envs_parser}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
