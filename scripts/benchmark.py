"""Throughput benchmarks, one subcommand each; figures go to docs/benchmarks.md with their command.

    python scripts/benchmark.py envs [--device cpu|cuda] [--threads N] [--repeats R]
    python scripts/benchmark.py scale [--processes 1,2] [--iterations 6] [--only TEXT]
    python scripts/benchmark.py metaworld [--tasks 5] [--episodes 4] [--iterations 2]
    python scripts/benchmark.py meta [--threads 1,default] [--iterations N] [--algos A,B]
        [--tasks 20,100,1000] [--device cpu|cuda] [--fisher-fraction F] [--profile]
        [--cheetah-tasks 40] [--cheetah-episodes 20]

``envs``: environment steps per second of batched Navigation2D under a random policy (actions
drawn by torch on the env's device every step) at T*E = 400, 4,000 and 40,000, on the CPU and,
when there is one, the GPU; and of one raw Gymnasium HalfCheetahVel env, for reference.

``scale``: seconds per meta-iteration of ``meta-rl train`` itself on 1 and 2 processes
(``torchrun --standalone``) for Navigation2D and HalfCheetahVel at the MAML paper's size.

``meta``: seconds per meta-iteration (sampling, inner loop and outer step, as ``Trainer`` runs
them) on Navigation2D at the MAML paper's size -- 20 tasks x 20 episodes x 100 steps, a 100x100
ReLU policy, one inner step -- for MAML and Meta-SGD (TRPO outer step) and Reptile (SGD outer
step), once per ``--threads`` setting of the main process; then one HalfCheetahVel iteration
(MAML-TRPO, 40 tasks x 20 episodes x 200 steps, stepped by the main process and worker
processes) with its sampler's env steps/s next to the raw single-env MuJoCo rate. ``--profile``
adds where MAML's time goes.

``metaworld``: env steps/s of Meta-World ML1 (reach-v3) and ML10 envs on one core, stepped one
at a time by ``env.step`` and by the sampler (policy included, main process only); then seconds
per meta-iteration of the MAML-TRPO ML1-reach and ML10 presets.

Each ``envs`` figure is the best of ``--repeats`` timed runs after a warm-up run; each ``meta``
figure the best and the median of ``--iterations`` meta-iterations after a warm-up one.

To add a subcommand, write ``add_<name>_parser(subparsers)`` that sets
``run=<function(args) -> int>`` and list it in ``SUBCOMMANDS``.
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


def wide_console() -> Console:
    """A console whose tables are never cut: the terminal's width, or 200 columns in a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
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
    console = wide_console()
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


# -- meta -----------------------------------------------------------------------------------------

#: TrainConfig overrides per algorithm (the rest are the paper-size defaults below)
META_ALGOS = {
    "maml": dict(algo="maml", outer="trpo"),
    "metasgd": dict(algo="metasgd", outer="trpo"),
    "metasgd-rates": dict(algo="metasgd", outer="trpo", rate_lr=1e-3),  # rates' own Adam
    "reptile": dict(algo="reptile", outer="sgd", inner_steps=1),
}


def thread_settings(text: str) -> list[int | None]:
    """``"1,default"`` -> ``[1, None]`` (None: torch's default thread count)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        out.append(None if item == "default" else positive_int(item))
    return out


def int_list(text: str) -> list[int]:
    return [positive_int(x) for x in text.split(",")]


class PhaseTimer:
    """Wall time spent in chosen methods of one meta-iteration (inclusive; for ``--profile``)."""

    def __init__(self, sync: Callable[[], None]):
        self.sync, self.seconds, self.calls = sync, {}, {}
        self.reference: dict[str, float] = {}  # seconds of reference passes (the floor's units)

    def wrap(self, owner, name: str, label: str, on_result=None) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            result = inner(*args, **kwargs)
            self.sync()
            self.add(label, time.perf_counter() - start)
            return on_result(result) if on_result else result

        setattr(owner, name, timed)

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds
        self.calls[label] = self.calls.get(label, 0) + 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def profile_learner(setup, timer: PhaseTimer) -> Callable[[], None]:
    """Wrap the phases of ``setup``'s meta-iteration with ``timer``; returns an undo function."""
    from meta_rl import algorithms, objective

    patched = [(objective.MetaObjective, name, getattr(objective.MetaObjective, name))
               for name in ("surrogate", "fisher_hvp", "at")]
    patched += [(algorithms, "adapt", algorithms.adapt)]
    learner = setup.learner

    def timed_products(hvp):
        def product(v):
            timer.sync()
            start = time.perf_counter()
            out = hvp(v)
            timer.sync()
            timer.add("curvature products (CG)", time.perf_counter() - start)
            return out
        return product

    timer.wrap(setup.sampler, "sample", "sampling (inner + validation)")
    timer.wrap(algorithms, "adapt", "inner loop incl. its sampling")
    timer.wrap(learner, "_inner_kl", "inner-KL metric")
    timer.wrap(learner.outer, "step", "outer step (total)")
    timer.wrap(objective.MetaObjective, "surrogate", "outer: surrogate on validation states")
    timer.wrap(objective.MetaObjective, "fisher_hvp", "outer: curvature setup",
               on_result=timed_products)
    timer.wrap(objective.MetaObjective, "at", "outer: line-search candidates")

    def undo():
        for owner, name, value in patched:
            setattr(owner, name, value)
        for obj, name in ((setup.sampler, "sample"), (learner, "_inner_kl"),
                          (learner.outer, "step")):
            obj.__dict__.pop(name, None)

    return undo


def time_meta(config, iterations: int, device: str, profile: bool = False):
    """Seconds of each of ``iterations`` meta-iterations after a warm-up one, as the trainer
    runs them; plus env steps per iteration, sampler seconds/steps and (``profile``) phases."""
    from meta_rl.seeding import iteration_seed
    from meta_rl.trainer import build

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    setup = build(config, torch.device(device))
    timer = PhaseTimer(sync)
    undo = profile_learner(setup, timer) if profile else None
    sampled = {"seconds": 0.0, "steps": 0}
    sample = setup.sampler.sample

    def counted_sample(*args, **kwargs):
        sync()
        start = time.perf_counter()
        episodes = sample(*args, **kwargs)
        sync()
        sampled["seconds"] += time.perf_counter() - start
        sampled["steps"] += episodes.num_steps()
        return episodes

    setup.sampler.sample = counted_sample
    times, steps = [], []
    try:
        for i in range(iterations + 1):
            if i == 1:  # drop the warm-up iteration's figures
                timer.reset()
                sampled.update(seconds=0.0, steps=0)
            seed = iteration_seed(config.seed, i)
            tasks = setup.family.sample_tasks(config.sampling.meta_batch, seed=seed)
            sync()
            start = time.perf_counter()
            metrics = setup.learner.meta_step(tasks, seed)
            sync()
            if i:
                times.append(time.perf_counter() - start)
                steps.append(metrics["env_steps"])
        if profile:  # outside the phase totals (its sampling is not an iteration's)
            seconds, calls = dict(timer.seconds), dict(timer.calls)
            reference = policy_pass_times(setup, tasks, seed, sync)
            timer.seconds, timer.calls, timer.reference = seconds, calls, reference
    finally:
        if undo:
            undo()
        setup.close()
    return times, steps, sampled, timer


def policy_pass_times(setup, tasks: list, seed: int, sync) -> dict[str, float]:
    """Best-of-5 seconds of one policy forward, and of a forward+backward (the inner loop's
    REINFORCE gradient), over the ``T x E x H`` states of one sampling: the units of the floor."""
    from meta_rl.inner import detach, inner_loss, policy_params
    from meta_rl.policies import batch_params
    from meta_rl.returns import compute_advantages

    meta = detach(setup.learner.meta)
    params = batch_params(policy_params(setup.policy, meta), len(tasks))
    episodes = setup.sampler.sample(tasks, params, seed)
    adv = compute_advantages(episodes, setup.config.returns)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}

    def forward():
        with torch.no_grad():
            setup.policy.dist(params, episodes.obs)

    def forward_backward():
        torch.autograd.grad(inner_loss(setup.policy, leaves, episodes, adv).sum(),
                            list(leaves.values()))

    return {"policy forward over T*E*H states": best_time(forward, 5, sync),
            "policy forward+backward over T*E*H states": best_time(forward_backward, 5, sync)}


def run_meta(args: argparse.Namespace) -> int:
    from meta_rl.config import TrainConfig

    if args.device != "cpu" and not args.device.startswith("cuda"):
        print(f"error: --device must be cpu, cuda or cuda:N, got {args.device!r}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}, but torch sees no CUDA device (a CPU-only torch "
              "build, or no GPU); use --device cpu", file=sys.stderr)
        return 2
    unknown = sorted(set(args.algos) - set(META_ALGOS))
    if unknown:
        print(f"error: unknown algorithm(s) {', '.join(unknown)}; choose from "
              f"{', '.join(META_ALGOS)}", file=sys.stderr)
        return 2
    base = dict(env="Navigation2D", episodes=args.episodes, hidden=(100, 100), seed=0,
                device=args.device, iterations=1)
    if args.fisher_fraction is not None:
        base["fisher_fraction"] = args.fisher_fraction
    try:  # the config's own checks (fisher_fraction in (0, 1], ...) before anything runs
        TrainConfig.from_dict(base)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seed_everything(0)
    default_threads = torch.get_num_threads()
    console = wide_console()
    table = Table(title="Seconds per meta-iteration (best, median) and env steps/s, Navigation2D "
                        f"(E={args.episodes} episodes x H=100 steps per task, 100x100 policy)",
                  caption=machine())
    # short headers (the title says the unit), so that the table fits 80 columns uncut
    for column in ("algo", "outer", "tasks", "device", "threads", "best", "median",
                   "steps/s"):
        table.add_column(column, justify="left" if column in ("algo", "outer", "device")
                         else "right", no_wrap=True)
    profiles = []
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        for tasks in args.tasks:
            for algo in args.algos:
                config = TrainConfig.from_dict({**base, "meta_batch": tasks, **META_ALGOS[algo]})
                profile = args.profile and algo == args.algos[0]
                times, steps, _, timer = time_meta(config, args.iterations, args.device, profile)
                best, median = min(times), float(np.median(times))
                table.add_row(algo, config.outer_name, str(tasks), args.device,
                              f"{torch.get_num_threads()}" + ("" if threads else " (default)"),
                              f"{best:.3f}", f"{median:.3f}",
                              f"{np.mean(steps) / median:,.0f}")
                if profile:
                    profiles.append((algo, tasks, torch.get_num_threads(), median, timer))
    torch.set_num_threads(default_threads)
    if args.algos:
        console.print(table)
    for algo, tasks, threads, median, timer in profiles:
        console.print(profile_table(algo, tasks, threads, median, timer, args.iterations))
    if args.cheetah_tasks and args.cheetah_episodes:
        console.print(cheetah_table(args, base))
    return 0


def profile_table(algo, tasks, threads, median, timer: PhaseTimer, iterations: int) -> Table:
    table = Table(title=f"Where {algo}'s time goes ({tasks} tasks, {threads} threads; inclusive "
                        f"wall time per iteration, mean of {iterations})")
    for column in ("phase", "ms / iter", "calls / iter", "share of median iteration"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    rows = [(label, seconds, timer.calls[label]) for label, seconds in timer.seconds.items()]
    outer_total = timer.seconds.get("outer step (total)")
    if outer_total is not None:
        parts = sum(sec for label, sec, _ in rows if label.startswith("outer:")) + \
            timer.seconds.get("curvature products (CG)", 0.0)
        rows.append(("outer: the rest (meta-gradient, CG's vector ops)", outer_total - parts,
                     iterations))
    for label, seconds, calls in rows:
        per = seconds / iterations
        table.add_row(label, f"{per * 1e3:,.1f}", f"{calls / iterations:g}", f"{per / median:.0%}")
    for label, seconds in timer.reference.items():
        table.add_row(f"(reference) {label}", f"{seconds * 1e3:,.1f}", "", "")
    return table


def cheetah_table(args: argparse.Namespace, base: dict) -> Table:
    from meta_rl.config import TrainConfig

    config = TrainConfig.from_dict({**base, "env": "HalfCheetahVel",
                                    "episodes": args.cheetah_episodes,
                                    "meta_batch": args.cheetah_tasks, **META_ALGOS["maml"]})
    torch.set_num_threads(args.cheetah_threads or torch.get_num_threads())
    times, steps, sampled, _ = time_meta(config, args.cheetah_iterations, args.device)
    raw = half_cheetah_rate(repeats=3)
    rate = sampled["steps"] / sampled["seconds"]
    horizon = envs.make("HalfCheetahVel").horizon
    table = Table(title=f"HalfCheetahVel, MAML-TRPO: {args.cheetah_tasks} tasks x "
                        f"{args.cheetah_episodes} episodes x {horizon} steps, "
                        f"{torch.get_num_threads()} torch threads (1 while sampling), "
                        f"{os.cpu_count()} env steppers (the main process and workers)")
    for column in ("best s/iter", "median s/iter", "env steps / iter", "sampler steps/s",
                   "raw single env steps/s", "sampler / raw"):
        table.add_column(column, justify="right")
    table.add_row(f"{min(times):.2f}", f"{float(np.median(times)):.2f}",
                  f"{int(np.mean(steps)):,}", f"{rate:,.0f}", f"{raw:,.0f}", f"{rate / raw:.2f}x")
    return table


def add_meta_parser(subparsers) -> None:
    p = subparsers.add_parser("meta", help="seconds per meta-iteration (MAML, Meta-SGD, Reptile)")
    p.add_argument("--threads", type=thread_settings, default=[1, None],
                   help="main-process torch threads to try, comma-separated; 'default' is "
                        "torch's choice (default: 1,default)")
    p.add_argument("--iterations", type=positive_int, default=5,
                   help="timed meta-iterations after one warm-up (default 5)")
    p.add_argument("--algos", type=lambda t: [a for a in t.split(",") if a],
                   default=list(META_ALGOS),
                   help="comma-separated subset of maml,metasgd,reptile ('' for HalfCheetahVel "
                        "only)")
    p.add_argument("--tasks", type=int_list, default=[20],
                   help="meta-batch sizes to scale over, e.g. 20,100,1000 (default 20)")
    p.add_argument("--episodes", type=positive_int, default=20, help="episodes per task (20)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--fisher-fraction", type=float, default=None,
                   help="TRPO's fisher_fraction (default: TrainConfig's)")
    p.add_argument("--profile", action="store_true",
                   help="also time the phases of the first algorithm's iterations")
    p.add_argument("--cheetah-tasks", type=int, default=40,
                   help="HalfCheetahVel tasks (0 skips HalfCheetahVel; default 40)")
    p.add_argument("--cheetah-episodes", type=int, default=20,
                   help="HalfCheetahVel episodes per task (0 skips; default 20)")
    p.add_argument("--cheetah-iterations", type=positive_int, default=1,
                   help="timed HalfCheetahVel iterations after a warm-up one (default 1)")
    p.add_argument("--cheetah-threads", type=positive_int, default=None,
                   help="main-process torch threads for HalfCheetahVel (default: torch's)")
    p.set_defaults(run=run_meta)


# -- scale -----------------------------------------------------------------------------------------

#: (label, ``meta-rl train`` flags) of the ``scale`` runs: Navigation2D at the paper's size, and
#: HalfCheetahVel at the paper's (sampling-bound: 40 tasks x 20 episodes x 200 MuJoCo steps)
SCALE_RUNS = (
    ("Navigation2D, MAML-TRPO, 20 tasks x 20 episodes", ["--preset", "navigation2d-maml"]),
    ("HalfCheetahVel, MAML-TRPO, 40 tasks x 20 episodes", ["--preset", "halfcheetahvel-maml"]),
)


def time_training(flags: list[str], processes: int, iterations: int, out: Path) -> list[float]:
    """Seconds of each meta-iteration (from ``metrics.jsonl``) of ``meta-rl train`` on
    ``processes`` ranks (``torchrun --standalone`` when more than one)."""
    import json
    import shutil
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "meta_rl", "train", *flags, "--iterations", str(iterations),
               "--out", str(out), "--checkpoint-every", str(iterations)]
    if processes > 1:
        command[1:2] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                        str(processes), "-m"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    walls = [json.loads(line)["wall_s"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return list(np.diff([0.0, *walls]))


def run_scale(args: argparse.Namespace) -> int:
    import tempfile

    console = wide_console()
    table = Table(title=f"Seconds per meta-iteration of `meta-rl train` on 1 and "
                        f"{max(args.processes)} processes (median of iterations 2..{args.iterations})",
                  caption=machine())
    for column in ("run", "processes", "median s/iter", "speed-up"):
        table.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    with tempfile.TemporaryDirectory() as tmp:
        for label, flags in SCALE_RUNS:
            if args.only and args.only not in label:
                continue
            base = None
            for processes in args.processes:
                times = time_training(flags, processes, args.iterations, Path(tmp) / "run")
                median = float(np.median(times[1:]))  # the first pays the start-up
                base = base or median
                table.add_row(label, str(processes), f"{median:.2f}", f"{base / median:.2f}x")
    console.print(table)
    return 0


def add_scale_parser(subparsers) -> None:
    p = subparsers.add_parser("scale", help="meta-rl train on 1 and more processes (torchrun)")
    p.add_argument("--processes", type=int_list, default=[1, 2],
                   help="process counts to time, comma-separated (default 1,2)")
    p.add_argument("--iterations", type=positive_int, default=6,
                   help="meta-iterations per run; the first is not counted (default 6)")
    p.add_argument("--only", default="", help="only the runs whose label contains this text")
    p.set_defaults(run=run_scale)


# -- dispatch --------------------------------------------------------------------------------------

#: subcommand name -> function adding its parser (which sets ``run``)
# -- metaworld --------------------------------------------------------------------------------------


def metaworld_sampler(family, meta_batch: int, episodes: int):
    """The Meta-World presets' policy (100x100 tanh) at its seed-0 init, batched for
    ``meta_batch`` tasks, and a sampler of ``episodes`` per task in the main process only."""
    from meta_rl.config import PolicyConfig, SamplingConfig
    from meta_rl.policies import batch_params, make_policy
    from meta_rl.sampling import make_sampler

    policy = make_policy(family.observation_space, family.action_space,
                         PolicyConfig(hidden=(100, 100), activation="tanh"))
    params = batch_params(policy.init_params(torch.Generator().manual_seed(0)), meta_batch)
    sampler = make_sampler(family, policy, SamplingConfig(meta_batch=meta_batch,
                                                          episodes=episodes), num_workers=1)
    return params, sampler


def run_metaworld(args: argparse.Namespace) -> int:
    """Meta-World on one core: raw ``env.step`` of each family's envs, the sampler stepping the
    same envs (main process only), and the seconds of a meta-iteration of the presets."""
    from meta_rl.config import TrainConfig
    from meta_rl.presets import load_yaml_config

    torch.set_num_threads(1)
    seed_everything(0)
    console = wide_console()
    if args.retask_iterations:  # first, so that no other part's envs are in the pool
        console.print(retask_memory(args.retask_iterations))
    table = Table(title="Meta-World on one core", caption=machine())
    for column in ("what", "steps/s", "time per step"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for name, kwargs in (("MetaWorldML1", {"env_name": "reach-v3"}), ("MetaWorldML10", {})):
        family = envs.make(name, horizon=args.horizon, **kwargs)
        tasks = family.sample_tasks(args.tasks, seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (family.horizon, 4)).astype(np.float32)
        env_list = [family.make_env(t) for _ in range(args.episodes) for t in tasks]

        def raw():
            for env in env_list:
                env.reset(seed=0)
                for action in actions:
                    env.step(action)

        steps = len(env_list) * family.horizon
        rate = steps / best_time(raw, args.repeats, lambda: None)
        table.add_row(f"{name} {kwargs.get('env_name', '')}: env.step, one env at a time",
                      f"{rate:,.0f}", f"{1e6 / rate:,.0f} us")
        for env in env_list:
            env.close()
        params, sampler = metaworld_sampler(family, len(tasks), args.episodes)
        try:
            seconds = best_time(lambda: sampler.sample(tasks, params, 0), args.repeats,
                                lambda: None)
        finally:
            sampler.close()
        table.add_row(f"{name}: the sampler (policy + the same envs, main process)",
                      f"{steps / seconds:,.0f}", f"{1e6 * seconds / steps:,.0f} us")
    console.print(table)
    if args.iterations:
        times = Table(title="Meta-World meta-iterations (MAML-TRPO presets)", caption=machine())
        for column in ("preset", "env steps / iteration", "s / iteration (median)",
                       "us per env step"):
            times.add_column(column, justify="left" if column == "preset" else "right")
        for preset in ("metaworld-ml1-reach-maml", "metaworld-ml10-maml"):
            config = TrainConfig.from_dict(load_yaml_config(preset)).replace(
                threads=args.threads)
            seconds, steps, _, _ = time_meta(config, args.iterations, "cpu")
            median = float(np.median(seconds))
            times.add_row(preset, f"{int(np.median(steps)):,}", f"{median:.1f}",
                          f"{1e6 * median / float(np.median(steps)):,.0f}")
        console.print(times)
    return 0


def retask_memory(iterations: int, meta_batch: int = 20, episodes: int = 10,
                  horizon: int = 10) -> Table:
    """The sampler of the ML10 presets' size (20 tasks x 10 episodes, main process) drawing new
    tasks every iteration: Sawyer envs alive (in use + idle in the pool) and the process's RSS.
    Short episodes: what is measured is memory and the envs rebuilt, not the simulation."""
    from envs.metaworld import POOL

    family = envs.make("MetaWorldML10", horizon=horizon)
    params, sampler = metaworld_sampler(family, meta_batch, episodes)
    table = Table(title=f"ML10 sampler retasking {meta_batch} tasks x {episodes} episodes each "
                        f"iteration ({horizon}-step episodes, main process)", caption=machine())
    for column in ("iteration", "Sawyer envs alive", "RSS (GB)", "s / iteration"):
        table.add_column(column, justify="right")
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        for it in range(iterations):
            start = time.perf_counter()
            sampler.sample(family.sample_tasks(meta_batch, seed=it), params, it)
            seconds = time.perf_counter() - start
            if it == 0 or (it + 1) % 5 == 0 or it + 1 == iterations:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * page / 2**30
                table.add_row(str(it + 1), f"{POOL.alive:,}", f"{rss:.2f}", f"{seconds:.1f}")
    finally:
        sampler.close()
    return table


def add_metaworld_parser(subparsers) -> None:
    p = subparsers.add_parser("metaworld", help="Meta-World: raw env.step vs the sampler, "
                                                "and preset meta-iterations")
    p.add_argument("--tasks", type=positive_int, default=5, help="tasks (5)")
    p.add_argument("--episodes", type=positive_int, default=4, help="episodes per task (4)")
    p.add_argument("--horizon", type=positive_int, default=150, help="episode length (150)")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs; the best is kept")
    p.add_argument("--iterations", type=non_negative_int, default=2,
                   help="meta-iterations of each preset to time after a warm-up (2; 0: none)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch threads of the main process for the meta-iterations (1)")
    p.add_argument("--retask-iterations", type=non_negative_int, default=0,
                   help="iterations of an ML10 sampler drawing new tasks, reporting the Sawyer "
                        "envs alive and the memory (0: skip; 25 takes about 3 minutes)")
    p.set_defaults(run=run_metaworld)


SUBCOMMANDS: dict[str, Callable] = {"envs": add_envs_parser, "meta": add_meta_parser,
                                    "scale": add_scale_parser,
                                    "metaworld": add_metaworld_parser}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_parser in SUBCOMMANDS.values():
        add_parser(subparsers)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
