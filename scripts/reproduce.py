"""Reproduce a published meta-RL result in one command: train the presets' seeds, evaluate them
with the MAML paper's protocol, and write the table into the output folder.

    python scripts/reproduce.py navigation2d --iterations 200                # 3 algorithms x 5 seeds
    python scripts/reproduce.py navigation2d --algos maml --seeds 0 --iterations 100
    python scripts/reproduce.py halfcheetahdir --algos maml --seeds 0 --frame-skip 1
    python scripts/reproduce.py navigation2d --algos maml --inner-lr 0.5 --gae-lambda 0.9

For each algorithm and seed it trains the shipped preset ``<target>-<algo>`` into
``--out/<target>-<algo>-s<seed>`` (an existing complete run of the same experiment is reused, a
shorter one resumed). Any training setting of ``meta-rl train`` may be given as a flag (the
same flags, made from the config): it changes the preset for every algorithm, and the run folder
and the table's heading name it, so a run of the preset's settings is never reused in its place.

The protocol (the ``--eval-*`` flags change it): 40 held-out tasks, 0-3 adaptation steps, each
on a batch of 40 x horizon env steps of whole episodes (the authors' test script samples
``batch_size=4000`` env steps per step), with a smaller step size after the first step (the
paper's appendix A.2: "halving the learning rate after the first gradient step"). How much
smaller is chosen per run on validation tasks, never on the reported ones: every schedule of
:data:`LR_GRID` (``later_lr_scale``, ``later_lr_decay``) is evaluated on other held-out tasks
(evaluation seed ``VALIDATION_SEED + seed``), the one with the best mean return over steps 2..K
is kept, and only then are the reported tasks (evaluation seed ``seed``) measured, once.
``--eval-later-lr-scale`` fixes the schedule instead (the paper's: 0.5).

It writes each run's ``eval.json`` into its folder, and appends a section (the mean over seeds
+- their standard deviation after each step, every seed's own figures, the training wall time,
the machine and the exact command, beside the papers' numbers) to ``--out/results.md``, with
the figures in ``--out/<target>-summary.json``. It never edits the docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rich.console import Console  # noqa: E402

import envs  # noqa: E402
from meta_rl import flags  # noqa: E402
from meta_rl.checkpoint import load_checkpoint  # noqa: E402
from meta_rl.cli import add_train_flags, seed_global_rngs  # noqa: E402
from meta_rl.config import EvalConfig, RunConfig, TrainConfig  # noqa: E402
from meta_rl.evaluation import evaluate  # noqa: E402
from meta_rl.inner import step_scales  # noqa: E402
from meta_rl.presets import load_yaml_config  # noqa: E402
from meta_rl.report import write_eval  # noqa: E402
from meta_rl.trainer import Trainer, check_revision  # noqa: E402

#: target -> algorithm -> (source, returns after 0..3 steps; None where not reported)
PAPER = {
    "navigation2d": {
        "maml": ("MAML paper, Table 4", [-40.41, -11.68, -3.33, -3.23]),
        "metasgd": ("Meta-SGD paper (MAML: -9.12 there)", [None, -8.64, None, None]),
    },
    "halfcheetahdir": {"maml": ("MAML paper, Table 5", [-50.69, 293.19, 313.48, 315.65])},
}
TARGETS = ("navigation2d", "halfcheetahdir", "halfcheetahvel", "antdir")
ALGOS = ("maml", "metasgd", "reptile")
NAMES = {"maml": "MAML", "metasgd": "Meta-SGD", "reptile": "Reptile"}
#: the MAML paper's test protocol (the ``--eval-*`` flags change it): its plain inner steps, with
#: later steps scaled by a schedule chosen on validation tasks, not ``meta-rl evaluate``'s
#: default KL bound on steps after the trained ones
PROTOCOL = EvalConfig(tasks=40, steps=3, episodes=40, batch_unit="steps", methods=("meta",),
                      later_kl=None)
#: (later_lr_scale, later_lr_decay) schedules tried on validation tasks: the constant step, the
#: paper's halving, and smaller or decaying later steps, down a ladder of factors of about
#: 1/sqrt(2) from 0.5 to 0.06, so that a larger first step still has later steps small enough
LR_GRID = tuple((s, d) for s in (1.0, 0.5, 0.35, 0.25, 0.18, 0.125, 0.09, 0.06)
                for d in (1.0, 0.5))
#: evaluation seed of a run's validation tasks, plus the run's seed (reported tasks use the
#: run's seed itself, so the two sets are drawn from different seeds)
VALIDATION_SEED = 1000


class Plan(NamedTuple):
    """What one invocation does: the runs, the protocol, and what the flags changed."""

    target: str
    runs: list[tuple[str, int, TrainConfig, Path]]  # (algo, seed, config, folder)
    protocol: EvalConfig
    choose_schedule: bool
    changes: dict  # training settings the flags changed, by name
    keep_every: int | None
    out: Path
    note: str


def number(value) -> str:
    """``value`` as short as it stays exact: ``0.5``, ``1``, ``1e-05``, ``0.1000001``."""
    if not isinstance(value, float):
        return str(value)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def parse(argv: list[str] | None) -> Plan:
    """The plan, every config built and checked (and every family constructed) before anything
    trains; a bad value exits 2 with one line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--algos", default=",".join(ALGOS),
                        help="comma-separated subset of " + ",".join(ALGOS))
    parser.add_argument("--seeds", default="0,1,2,3,4",
                        help="comma-separated training seeds (default 0-4)")
    parser.add_argument("--out", default="runs/reproduce",
                        help="folder for the run directories and results.md")
    parser.add_argument("--note", default="", help="a sentence added under the table")
    add_train_flags(parser, skip=("env", "algo", "seed"))
    args = parser.parse_args(argv)
    algos = [a for a in args.algos.split(",") if a]
    if not algos or set(algos) - set(ALGOS):
        parser.error(f"--algos must be a subset of {','.join(ALGOS)}, got {args.algos!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    given = flags.given(args)
    eval_given = given.pop("eval", {})
    try:
        protocol = dataclasses.replace(PROTOCOL, **eval_given)
    except ValueError as exc:
        parser.error(str(exc))
    choose = "later_lr_scale" not in eval_given
    if choose and protocol.steps < 2:
        parser.error("choosing the later step size needs --eval-steps >= 2; or give "
                     "--eval-later-lr-scale")
    runtime = {"iterations", *(f.name for f in dataclasses.fields(RunConfig))}
    changes = {k: v for k, v in flags.settings(given).items() if k not in runtime}
    runs = []
    try:
        for algo in algos:
            preset = TrainConfig.from_dict(load_yaml_config(f"{args.target}-{algo}"))
            env_kwargs = {**preset.env_kwargs, **given.get("env_kwargs", {})}
            config = preset.from_dict({**given, "env_kwargs": env_kwargs}, base=preset)
            envs.make(config.env, **config.env_kwargs)  # e.g. frame_skip for Navigation2D
            suffix = "".join(f"-{name}{number(value)}" for name, value in changes.items())
            for seed in seeds:
                runs.append((algo, seed, config.replace(seed=seed),
                             Path(args.out) / f"{args.target}-{algo}-s{seed}{suffix}"))
    except ValueError as exc:
        parser.error(str(exc))
    keep_every = flags.settings(given).get("keep_every")
    return Plan(args.target, runs, protocol, choose, changes, keep_every, Path(args.out),
                args.note)


def train(config: TrainConfig, out: Path, console: Console, keep_every: int | None = None) -> dict:
    """Train ``config`` into ``out`` (reusing or resuming what is there); the checkpoint's state.
    A resumed run keeps its own ``keep_every`` unless ``keep_every`` is given."""
    if (out / "checkpoint.pt").exists():
        state = load_checkpoint(out)
        saved = TrainConfig.from_dict(state["config"])
        if ({**saved.experiment(), "iterations": 0}
                != {**config.experiment(), "iterations": 0}):
            raise SystemExit(f"error: {out} holds a run with another config; remove it or "
                             "pass --out")
        try:  # the same config on an older revision of the family is another experiment too
            check_revision(state, out / "checkpoint.pt")
        except ValueError as exc:
            raise SystemExit(f"error: {exc} (or pass --out)") from None
        if state["iteration"] >= config.iterations:
            console.print(f"reusing {out} ({state['iteration']} iterations)", markup=False)
            return state
        # a resumed run keeps its experiment; how it runs and what it keeps may change
        trainer = Trainer.resume(out, iterations=config.iterations, threads=config.run.threads,
                                 keep_every=keep_every, stage=out.name)
    else:
        trainer = Trainer(config, out, stage=out.name)
    try:
        trainer.train()
    finally:
        trainer.close()
    return load_checkpoint(out)


def grid(steps: int) -> list[tuple[float, float]]:
    """The schedules of :data:`LR_GRID` that differ over ``steps`` steps (the decay only acts
    from step 3 on)."""
    return [(s, d) for s, d in LR_GRID if steps >= 3 or d == 1.0]


def select_schedule(out: Path, seed: int, protocol: EvalConfig,
                    console: Console) -> tuple[float, float, list]:
    """The (later_lr_scale, later_lr_decay) of :data:`LR_GRID` with the best mean return over
    steps 2..K on the run's validation tasks, and every schedule's validation curve."""
    tried = []
    for scale, decay in grid(protocol.steps):
        result = evaluate(out, protocol, seed=VALIDATION_SEED + seed, methods="meta",
                          later_lr_scale=scale, later_lr_decay=decay, progress=False)
        curve = result.methods["meta"].mean
        tried.append({"later_lr_scale": scale, "later_lr_decay": decay, "validation": curve})
        console.print(f"  validation, scale {scale:g} decay {decay:g}: "
                      + " / ".join(f"{v:.2f}" for v in curve), highlight=False)
    best = max(tried, key=lambda t: statistics.mean(t["validation"][2:]))
    return best["later_lr_scale"], best["later_lr_decay"], tried


# -- the table -------------------------------------------------------------------------------------


def schedule(steps: int, scale: float, decay: float) -> str:
    """The inner step sizes relative to the first, e.g. ``1, 0.5, 0.5``."""
    return ", ".join(f"{s:g}" for s in step_scales(steps, scale, decay))


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(target: str, rows: dict[str, list[dict]], steps: int) -> str:
    head = "| method | seeds | " + " | ".join(f"step {k}" for k in range(steps + 1))
    head += " | iterations | train wall / seed | step sizes |\n|" + "---|" * (steps + 6) + "\n"
    lines = []
    for algo, (source, values) in PAPER.get(target, {}).items():
        if algo in rows:
            cells = " | ".join("—" if v is None else f"{v:.2f}" for v in values[: steps + 1])
            sizes = schedule(steps, 0.5, 1.0) if algo == "maml" else "—"
            lines.append(f"| {NAMES[algo]} ({source}) | — | {cells} | 500 (paper) | — | {sizes} |")
    for algo, runs in rows.items():
        means = [[r["meta"][k] for r in runs] for k in range(steps + 1)]
        seeds = ",".join(str(r["seed"]) for r in runs)
        walls = [r["wall_s"] / 60 for r in runs]
        wall = f"{statistics.mean(walls):.1f} min" + (
            f" ({min(walls):.1f}–{max(walls):.1f})" if len(walls) > 1 else "")
        chosen = {(r["later_lr_scale"], r["later_lr_decay"]) for r in runs}
        shared = schedule(steps, *chosen.pop()) if len(chosen) == 1 else "per seed"
        lines.append(f"| **{NAMES[algo]} (ours)** | {seeds} | "
                     + " | ".join(fmt(m) for m in means)
                     + f" | {runs[0]['iterations']} | {wall} | {shared} |")
        for r in runs:
            sizes = schedule(steps, r["later_lr_scale"], r["later_lr_decay"])
            lines.append(f"| &nbsp;&nbsp;seed {r['seed']} | {r['seed']} | "
                         + " | ".join(f"{v:.2f} ± {c:.2f}" for v, c in zip(r["meta"], r["ci"]))
                         + f" | {r['iterations']} | {r['wall_s'] / 60:.1f} min | {sizes} |")
        for name in runs[0]["baselines"]:
            curves = [[r["baselines"][name][k] for r in runs] for k in range(steps + 1)]
            lines.append(f"| &nbsp;&nbsp;baseline: {name} | {seeds} | "
                         + " | ".join(fmt(c) for c in curves) + " | — | — | as the seed's |")
    return head + "\n".join(lines) + "\n"


def machine() -> str:
    import os
    import platform

    import torch

    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}"


def section(plan: Plan, rows: dict[str, list[dict]], argv: list[str]) -> str:
    p = plan.protocol
    batch = (f"{p.episodes} × horizon env steps of whole episodes" if p.batch_unit == "steps"
             else f"{p.episodes} episodes")
    if plan.choose_schedule:
        sizes = (f"Step sizes relative to the first (last column) chosen per run among "
                 f"{len(grid(p.steps))} schedules by the mean return over steps 2..{p.steps} on "
                 f"{p.tasks} validation tasks (evaluation seed {VALIDATION_SEED} + seed), not on "
                 "the reported tasks")
    else:
        sizes = ("Step sizes relative to the first: "
                 + schedule(p.steps, p.later_lr_scale, p.later_lr_decay))
    command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in argv)
    changed = "".join(f", {k} {number(v)}" for k, v in plan.changes.items())
    algos = ", ".join(NAMES[a] for a in rows)
    return (f"\n## {plan.target}{changed}: {algos} ({datetime.date.today().isoformat()})\n\n"
            f"`{command}` on {machine()}. Returns on {p.tasks} held-out tasks after "
            f"0..{p.steps} adaptation steps, each on {batch}. {sizes}; ours are the mean over "
            f"seeds ± their standard deviation, then each seed's mean ± 95% CI over tasks. Train "
            f"wall time is meta-training only (evaluation excluded).\n\n"
            + table(plan.target, rows, p.steps) + (f"\n{plan.note}\n" if plan.note else ""))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plan = parse(argv)
    console = Console()
    rows: dict[str, list[dict]] = {}
    for algo, seed, config, out in plan.runs:
        seed_global_rngs(["--seed", str(seed)])
        state = train(config, out, console, plan.keep_every)
        if plan.choose_schedule:
            scale, decay, tried = select_schedule(out, seed, plan.protocol, console)
        else:
            scale, decay, tried = plan.protocol.later_lr_scale, plan.protocol.later_lr_decay, []
        result = evaluate(out, plan.protocol, later_lr_scale=scale, later_lr_decay=decay)
        write_eval(result, out)
        meta = result.methods["meta"]
        rows.setdefault(algo, []).append({
            "seed": seed, "meta": meta.mean, "ci": meta.ci95,
            "iterations": state["iteration"], "wall_s": state["totals"]["wall_s"],
            "baselines": {n: m.mean for n, m in result.methods.items() if n != "meta"},
            "later_lr_scale": scale, "later_lr_decay": decay, "validation": tried,
        })
        console.print(f"{plan.target} {algo} seed {seed}: after 0..{plan.protocol.steps} steps "
                      + " / ".join(f"{v:.2f}" for v in meta.mean)
                      + f" (later steps {scale:g}, decay {decay:g})", markup=False)
    text = section(plan, rows, argv)
    plan.out.mkdir(parents=True, exist_ok=True)
    with open(plan.out / "results.md", "a") as f:
        f.write(text)
    (plan.out / f"{plan.target}-summary.json").write_text(json.dumps(rows, indent=1))
    console.print(text, markup=False)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """:func:`main`, with Ctrl-C reported in one line: each run has checkpointed its last
    completed iteration (the trainer does that on Ctrl-C), so the same command goes on."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("reproduce.py: interrupted; every run kept its last completed iteration, and the "
              "same command goes on from there", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
