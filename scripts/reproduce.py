"""Reproduce a published meta-RL result in one command: train, evaluate, append to docs/results.md.

    python scripts/reproduce.py navigation2d                       # MAML, Meta-SGD, Reptile x 5 seeds
    python scripts/reproduce.py navigation2d --algos maml --seeds 0 --iterations 100
    python scripts/reproduce.py halfcheetahdir --algos maml --seeds 0 --iterations 20
    python scripts/reproduce.py halfcheetahdir --algos maml --seeds 0 --iterations 500 --keep-every 20
    python scripts/reproduce.py navigation2d --algos maml --iterations 200 --inner-lr 0.5 --gae-lambda 0.9

For each algorithm and seed it trains the shipped preset ``<target>-<algo>`` (the MAML paper's
settings) into ``--out/<target>-<algo>-s<seed>`` (an existing complete run is reused, an
interrupted or shorter one resumed; ``--keep-every`` also keeps earlier models), evaluates it
with the MAML paper's protocol, and appends a table to ``docs/results.md``: the mean over seeds
+- their standard deviation after each step, every seed's own figures, the training wall time
per seed, the hardware and the exact command, beside the papers' numbers. ``--inner-lr``,
``--gae-lambda``, ``--fisher-fraction``, ``--rate-lr`` (Meta-SGD) and ``--frame-skip`` each
change one setting of the preset; such runs get folders of their own, and the table's heading
names the changes.

The protocol: 40 held-out tasks, 0-3 adaptation steps, each on a batch of 40 x horizon env steps
of whole episodes (the authors' test script samples ``batch_size=4000`` env steps per step; the
paper's section 5.3 says "each with 40 samples"), with a smaller step size after the first step
(the paper's appendix A.2: "halving the learning rate after the first gradient step").

How much smaller is chosen per run on validation tasks, never on the reported ones: every
schedule of :data:`LR_GRID` (``later_lr_scale``, ``later_lr_decay``) is evaluated on other
held-out tasks (evaluation seed ``VALIDATION_SEED + seed``), the one with the best mean return
over steps 2..K is kept, and only then are the reported tasks (evaluation seed ``seed``)
measured, once. ``--later-lr-scale`` fixes the schedule instead (the paper's: 0.5).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from rich.console import Console  # noqa: E402

from meta_rl.checkpoint import load_checkpoint  # noqa: E402
from meta_rl.cli import load_yaml_config, seed_global_rngs  # noqa: E402
from meta_rl.config import RUNTIME_FIELDS, TrainConfig  # noqa: E402
from meta_rl.evaluation import check_methods, evaluate  # noqa: E402
from meta_rl.inner import step_scales  # noqa: E402
from meta_rl.progress import TrainingProgress  # noqa: E402
from meta_rl.report import write_eval  # noqa: E402
from meta_rl.trainer import Trainer, check_revision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: target -> algorithm -> (source, returns after 0..3 steps; None where not reported)
PAPER = {
    "navigation2d": {
        "maml": ("MAML paper, Table 4", [-40.41, -11.68, -3.33, -3.23]),
        "metasgd": ("Meta-SGD paper (MAML: -9.12 there)", [None, -8.64, None, None]),
    },
    "halfcheetahdir": {"maml": ("MAML paper, Table 5", [-50.69, 293.19, 313.48, 315.65])},
}
TARGETS = ("navigation2d", "halfcheetahdir", "halfcheetahvel", "antdir")
#: (later_lr_scale, later_lr_decay) schedules tried on validation tasks: the constant step, the
#: paper's halving, and smaller or decaying later steps, down a ladder of factors of about 1/sqrt(2)
#: from 0.5 to 0.06, so that a larger first step (``--inner-lr 0.5``) still has later steps as
#: small as 0.35 x 0.1
LR_GRID = tuple((s, d) for s in (1.0, 0.5, 0.35, 0.25, 0.18, 0.125, 0.09, 0.06)
                for d in (1.0, 0.5))
#: evaluation seed of a run's validation tasks, plus the run's seed (reported tasks use the
#: run's seed itself, so the two sets are drawn from different seeds)
VALIDATION_SEED = 1000
ALGOS = ("maml", "metasgd", "reptile")
#: training settings that a flag of the same name changes from the preset, with the tag that
#: marks such a run's folder (so a run of the preset's settings is never reused in its place)
SETTINGS = {"fisher_fraction": "ff", "inner_lr": "lr", "gae_lambda": "lam", "rate_lr": "rlr"}
#: settings that only some algorithms have (Reptile has no TRPO; only Meta-SGD learns rates)
SETTING_ALGOS = {"fisher_fraction": ("maml", "metasgd"), "rate_lr": ("metasgd",)}
NAMES = {"maml": "MAML", "metasgd": "Meta-SGD", "reptile": "Reptile"}


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


def train(config: TrainConfig, out: Path, console: Console, keep_every: int | None = None) -> dict:
    """Train ``config`` into ``out`` (reusing or resuming what is there); the checkpoint's state.
    A resumed run keeps its own ``keep_every`` unless ``keep_every`` is given."""
    if (out / "checkpoint.pt").exists():
        state = load_checkpoint(out)
        def experiment(c: dict) -> dict:  # what is computed, not how long or where
            return {k: v for k, v in c.items() if k not in ("iterations", *RUNTIME_FIELDS)}

        saved = TrainConfig.from_dict(state["config"]).to_dict()  # fields added since: defaults
        if experiment(saved) != experiment(config.to_dict()):
            raise SystemExit(f"error: {out} holds a run with another config; remove it or pass --out")
        try:  # the same config on an older revision of the family is another experiment too
            check_revision(state, out / "checkpoint.pt")
        except ValueError as exc:
            raise SystemExit(f"error: {exc} (or pass --out)") from None
        if state["iteration"] >= config.iterations:
            console.print(f"reusing {out} ({state['iteration']} iterations)", markup=False)
            return state
        # a resumed run keeps its experiment; how it runs and what it keeps may change
        trainer = Trainer.resume(out, iterations=config.iterations, threads=config.threads,
                                 keep_every=keep_every)
    else:
        trainer = Trainer(config, out)
    try:
        with TrainingProgress(config.iterations, trainer.iteration, console,
                              title=out.name) as progress:
            trainer.callbacks.append(progress)
            trainer.train()
    finally:
        trainer.close()
    return load_checkpoint(out)


def select_schedule(out: Path, seed: int, args, console: Console) -> tuple[float, float, list]:
    """The (later_lr_scale, later_lr_decay) of :data:`LR_GRID` with the best mean return over
    steps 2..K on the run's validation tasks, and every schedule's validation curve."""
    tried = []
    for scale, decay in grid(args.steps):
        result = evaluate(out, tasks=args.tasks, steps=args.steps, episodes=args.episodes,
                          seed=VALIDATION_SEED + seed, methods="meta", later_lr_scale=scale,
                          later_lr_decay=decay, batch_unit=args.batch_unit)
        curve = result.methods["meta"].mean
        tried.append({"later_lr_scale": scale, "later_lr_decay": decay, "validation": curve})
        console.print(f"  validation, scale {scale:g} decay {decay:g}: "
                      + " / ".join(f"{v:.2f}" for v in curve), highlight=False)
    best = max(tried, key=lambda t: statistics.mean(t["validation"][2:]))
    return best["later_lr_scale"], best["later_lr_decay"], tried


def grid(steps: int) -> list[tuple[float, float]]:
    """The schedules of :data:`LR_GRID` that differ over ``steps`` steps (the decay only acts
    from step 3 on)."""
    return [(s, d) for s, d in LR_GRID if steps >= 3 or d == 1.0]


def schedule(steps: int, scale: float, decay: float) -> str:
    """The inner step sizes relative to the first, e.g. ``1, 0.5, 0.5``."""
    return ", ".join(f"{s:g}" for s in step_scales(steps, scale, decay))


def shared_schedule(runs: list[dict], steps: int) -> str:
    """The step sizes of ``runs`` if they share one schedule, else "per seed"."""
    chosen = {(r["later_lr_scale"], r["later_lr_decay"]) for r in runs}
    return schedule(steps, *chosen.pop()) if len(chosen) == 1 else "per seed"


def number(value: float) -> str:
    """``value`` as short as it stays exact: ``0.5``, ``1``, ``1e-05``, ``0.1000001``."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(target: str, rows: dict[str, list[dict]], steps: int) -> str:
    head = "| method | seeds | " + " | ".join(f"step {k}" for k in range(steps + 1))
    head += " | iterations | train wall / seed | step sizes |\n|" + "---|" * (steps + 6) + "\n"
    lines = []
    for algo, source_values in PAPER.get(target, {}).items():
        source, values = source_values
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
        lines.append(f"| **{NAMES[algo]} (ours)** | {seeds} | "
                     + " | ".join(fmt(m) for m in means)
                     + f" | {runs[0]['iterations']} | {wall} | {shared_schedule(runs, steps)} |")
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


def run_configs(args, algos: list[str], seeds: list[int]) -> list[tuple]:
    """``(algo, seed, config, folder)`` of every run: the preset with the flags' changes. A bad
    value is TrainConfig's ValueError, raised before any run trains."""
    runs = []
    for algo in algos:
        for seed in seeds:
            data = {**load_yaml_config(f"{args.target}-{algo}"), "seed": seed}
            if args.iterations is not None:
                data["iterations"] = args.iterations
            if args.threads is not None:
                data["threads"] = args.threads
            if args.keep_every is not None:
                data["keep_every"] = args.keep_every
            suffix = ""
            for key, tag in SETTINGS.items():
                value = getattr(args, key)
                if value is not None and algo in SETTING_ALGOS.get(key, ALGOS):
                    data[key] = value
                    suffix += f"-{tag}{number(value)}"
            if args.frame_skip is not None:
                data["env_kwargs"] = {**(data.get("env_kwargs") or {}),
                                      "frame_skip": args.frame_skip}
                suffix += f"-fs{args.frame_skip}"
            folder = Path(args.out) / f"{args.target}-{algo}-s{seed}{suffix}"
            runs.append((algo, seed, TrainConfig.from_dict(data), folder))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=TARGETS)
    parser.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of "
                        + ",".join(ALGOS))
    parser.add_argument("--seeds", default="0,1,2,3,4",
                        help="comma-separated training seeds (default 0-4)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="meta-iterations (default: the preset's, 500)")
    parser.add_argument("--tasks", type=int, default=40, help="held-out evaluation tasks")
    parser.add_argument("--steps", type=int, default=3, help="adaptation steps")
    parser.add_argument("--episodes", type=int, default=40,
                        help="evaluation episodes per task and step (default 40, the paper's)")
    parser.add_argument("--baselines", default="meta",
                        help="evaluation methods (meta,random,pretrained,ppo); default meta only")
    parser.add_argument("--out", default="runs/reproduce", help="folder for the run directories")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"),
                        help="markdown file the table is appended to")
    parser.add_argument("--fisher-fraction", type=float, default=None,
                        help="TRPO curvature subsample (default: the preset's, 0.2; 1 is exact)")
    parser.add_argument("--inner-lr", type=float, default=None,
                        help="inner step size of training and of evaluation's first step; "
                             "Meta-SGD: the initial value of its learned rates (default: the "
                             "preset's, 0.1, the MAML paper's text; the authors' Navigation2D "
                             "code used 0.5)")
    parser.add_argument("--gae-lambda", type=float, default=None,
                        help="GAE lambda of every advantage, in [0, 1] (default: the preset's, "
                             "1, the MAML paper's return minus baseline)")
    parser.add_argument("--rate-lr", type=float, default=None,
                        help="Meta-SGD: learn its inner rates with their own Adam at this "
                             "learning rate, apart from the TRPO step on the policy (default: "
                             "the preset's, none: TRPO updates both, as in the Meta-SGD paper)")
    parser.add_argument("--frame-skip", type=int, default=None,
                        help="MuJoCo targets: simulator steps of 0.01 s per env step (default: "
                             "Gymnasium's, 5; the MAML paper's rllab envs used 1)")
    parser.add_argument("--later-lr-scale", type=float, default=None,
                        help="evaluation step size after the first step, relative to the first "
                             "(default: chosen per run on validation tasks; 0.5 is the MAML "
                             "paper's, 1 keeps it)")
    parser.add_argument("--later-lr-decay", type=float, default=1.0,
                        help="with --later-lr-scale: multiply the step size again at each step "
                             "after the second (default 1)")
    parser.add_argument("--batch-unit", choices=["episodes", "steps"], default="steps",
                        help="evaluation batches of --episodes episodes, or of --episodes x "
                             "horizon env steps of whole episodes (default, the authors' test "
                             "script)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in this process (default: torch's choice)")
    parser.add_argument("--keep-every", type=int, default=None,
                        help="also keep the model of every N-th iteration, to evaluate later "
                             "with meta-rl evaluate --iteration; 0 keeps the last only (default: "
                             "a resumed run's own setting, else 0; a complete run is reused as "
                             "it is)")
    parser.add_argument("--note", default="", help="a sentence added under the table")
    args = parser.parse_args(argv)
    algos = [a for a in args.algos.split(",") if a]
    if not algos or set(algos) - set(ALGOS):
        parser.error(f"--algos must be a subset of {','.join(ALGOS)}, got {args.algos!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    try:  # check everything evaluation needs before hours of training
        methods = check_methods(f"meta,{args.baselines}")
    except ValueError as exc:
        parser.error(f"--baselines: {exc}")
    for name in ("tasks", "episodes", "steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "steps" else 1):
            parser.error(f"--{name} must be {'>= 0' if name == 'steps' else 'positive'}, got {value}")
    try:
        step_scales(args.steps, 1.0 if args.later_lr_scale is None else args.later_lr_scale,
                    args.later_lr_decay)
    except ValueError as exc:
        parser.error(str(exc))
    if args.later_lr_scale is None and args.steps < 2:
        parser.error("choosing the later step size needs --steps >= 2; or give --later-lr-scale")
    if args.later_lr_scale is None and args.later_lr_decay != 1.0:
        parser.error("--later-lr-decay needs --later-lr-scale (without it both are chosen on "
                     "validation tasks)")
    if args.frame_skip is not None:
        if args.target == "navigation2d":
            parser.error("--frame-skip is for the MuJoCo targets; navigation2d has no simulator")
        if args.frame_skip < 1:
            parser.error(f"--frame-skip must be positive, got {args.frame_skip}")
    for key, have in SETTING_ALGOS.items():
        if getattr(args, key) is not None and not set(have) & set(algos):
            flag = "--" + key.replace("_", "-")
            parser.error(f"{flag} changes {' and '.join(NAMES[a] for a in have)} only; add "
                         f"{' or '.join(have)} to --algos")
    try:  # TrainConfig checks every training setting of every run before hours of training
        runs = run_configs(args, algos, seeds)
    except ValueError as exc:
        parser.error(str(exc))

    console = Console()
    rows: dict[str, list[dict]] = {}
    for algo, seed, config, out in runs:
        seed_global_rngs(["--seed", str(seed)])
        state = train(config, out, console, args.keep_every)
        if args.later_lr_scale is None:
            scale, decay, tried = select_schedule(out, seed, args, console)
        else:
            scale, decay, tried = args.later_lr_scale, args.later_lr_decay, []
        result = evaluate(out, tasks=args.tasks, steps=args.steps, episodes=args.episodes,
                          methods=methods, later_lr_scale=scale, later_lr_decay=decay,
                          batch_unit=args.batch_unit,
                          progress=lambda m: console.print(m, highlight=False,
                                                           markup=False))
        write_eval(result, out)
        meta = result.methods["meta"]
        rows.setdefault(algo, []).append({
            "seed": seed, "meta": meta.mean, "ci": meta.ci95,
            "iterations": state["iteration"], "wall_s": state["totals"]["wall_s"],
            "baselines": {n: m.mean for n, m in result.methods.items() if n != "meta"},
            "later_lr_scale": scale, "later_lr_decay": decay, "validation": tried,
        })
        console.print(f"{args.target} {algo} seed {seed}: after 0..{args.steps} steps "
                      + " / ".join(f"{v:.2f}" for v in meta.mean)
                      + f" (later steps {scale:g}, decay {decay:g})")

    batch = (f"{args.episodes} × horizon env steps of whole episodes"
             if args.batch_unit == "steps" else f"{args.episodes} episodes")
    if args.later_lr_scale is None:
        sizes = (f"Step sizes relative to the first (last column) chosen per run among "
                 f"{len(grid(args.steps))} schedules by the mean return over steps 2..{args.steps} on "
                 f"{args.tasks} validation tasks (evaluation seed {VALIDATION_SEED} + seed), "
                 f"not on the reported tasks")
    else:
        fixed = schedule(args.steps, args.later_lr_scale, args.later_lr_decay)
        sizes = f"Step sizes relative to the first: {fixed}"
    command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    changed = "".join(f", {key} {number(getattr(args, key))}"
                      for key in (*SETTINGS, "frame_skip") if getattr(args, key) is not None)
    section = (f"\n## {args.target}{changed}: {', '.join(NAMES[a] for a in algos)} "
               f"({datetime.date.today().isoformat()})\n\n"
               f"`{command}` on {machine()}. Returns on {args.tasks} held-out tasks after "
               f"0..{args.steps} adaptation steps, each on {batch}. {sizes}; ours are the mean "
               f"over seeds ± their standard deviation, then each seed's mean ± 95% CI over "
               f"tasks. Train wall time is meta-training only (evaluation excluded).\n\n"
               + table(args.target, rows, args.steps)
               + (f"\n{args.note}\n" if args.note else ""))
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    if not results.exists():
        results.write_text("# Results\n\nMeasured with `scripts/reproduce.py`; each section says "
                           "the command, the machine and the seeds.\n")
    with open(results, "a") as f:
        f.write(section)
    (Path(args.out) / f"{args.target}-summary.json").write_text(json.dumps(rows, indent=1))
    console.print(section, markup=False)
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
