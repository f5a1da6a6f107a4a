"""What each ``meta-rl`` subcommand does, given its parsed arguments; each returns an exit status.

User errors are ``ValueError``s naming the value and the fix (the entry point, ``meta_rl.cli``,
prints them as one line). Ctrl-C or SIGTERM during training writes a checkpoint of the last
completed iteration and exits 130.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

from meta_rl import flags
from meta_rl.presets import load_yaml_config, preset_names, resolve
from meta_rl.trainer import TrainingError

INTERRUPTED = 130

# Files a run writes; --force removes exactly these (and nothing else the user keeps there).
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "tensorboard", "eval.json",
             "adaptation.png", "training.png", "pretrained", "snapshots")


def cmd_envs(args) -> int:
    import envs
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Registered task families")
    for column in ("name", "varies", "horizon", "batched", "actions"):
        table.add_column(column)
    for name in envs.names():
        cls = envs.registry.family_class(name)
        try:
            family = cls()
            horizon, batched = str(family.horizon), "yes" if family.batched else "no (workers)"
            space = family.action_space
            actions = (f"Discrete({space.n})" if hasattr(space, "n")
                       else f"{type(space).__name__}{space.shape}")
        except ImportError as exc:  # MuJoCo families without mujoco installed
            horizon, batched, actions = str(cls.default_horizon), "no", f"unavailable: {exc}"
        table.add_row(*(escape(cell) for cell in (name, cls.varies, horizon, batched, actions)))
    Console().print(table)
    return 0


def cmd_presets(args) -> int:
    from meta_rl.config import TrainConfig

    for name in preset_names():
        c = TrainConfig.from_dict(load_yaml_config(name))
        print(f"{name:28s} {c.env:16s} {c.algo:8s} T={c.sampling.meta_batch} "
              f"E={c.sampling.episodes} iterations={c.iterations}")
    return 0


def cmd_check_env(args) -> int:
    import envs

    envs.registry.family_class(args.name)  # unknown name / bad module path: one clear line
    report = envs.check_family(args.name)
    print(report)
    return 0 if report.passed else 1


def _check_out(out: Path, force: bool) -> list[Path]:
    """The old run files in ``out`` that ``--force`` replaces; refuse what must not be touched.

    Only a folder holding a run (a checkpoint or metrics) is ever replaced, and only the files
    a run writes (:data:`RUN_FILES`); anything else there is left alone.
    """
    from meta_rl.trainer import holds_run

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory; choose another path")
    existing = [out / name for name in RUN_FILES if (out / name).exists()]
    if holds_run(out):
        if not force:
            raise ValueError(f"--out {out} already holds a run; continue it with --resume {out}, "
                             "replace it with --force, or choose another --out")
        return existing
    if existing:  # files with a run's names, but no run: not ours to delete
        raise ValueError(f"--out {out} has {', '.join(p.name for p in existing)} but no run "
                         "(no checkpoint.pt or metrics.jsonl); choose another --out")
    return []


def _resume_overrides(args) -> dict:
    """The settings ``--resume`` may change (:attr:`Trainer.RESUMABLE`), by name; any other
    flag is an error."""
    from meta_rl.trainer import Trainer

    given = flags.settings(flags.given(args))
    refused = ["--" + name.replace("eval.", "eval-").replace("_", "-") for name in given
               if name not in Trainer.RESUMABLE]
    refused += [f"--{k}" for k in ("preset", "config", "out", "force") if getattr(args, k)]
    if refused:
        allowed = ", ".join("--" + k.replace("_", "-") for k in Trainer.RESUMABLE)
        raise ValueError(f"--resume continues a run with its saved config; {', '.join(refused)} "
                         f"cannot be given with it (only {allowed} can)")
    return given


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def cmd_train(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from meta_rl.progress import TrainingProgress, summary_table
    from meta_rl.trainer import Trainer

    console = Console()
    if args.resume:
        overrides = _resume_overrides(args)
        out = Path(args.resume)
        trainer = Trainer.resume(out, **overrides)  # loads and builds; writes nothing yet
        done, total = trainer.iteration, trainer.config.iterations
        if done >= total:
            trainer.close()
            raise ValueError(f"the run in {out} has already done {done} of {total} iterations; "
                             "pass a larger --iterations with --resume to continue")
    else:
        if args.preset and args.config:
            raise ValueError("give --preset or --config, not both")
        config = resolve(args.preset or args.config, flags.given(args))
        config.run.torch_device()  # --device cuda without CUDA: fail before writing anything
        import envs

        envs.registry.family_class(config.env)
        default_out = Path("runs") / f"{config.env.replace(':', '.')}-{config.algo}-s{config.seed}"
        out = Path(args.out) if args.out else default_out
        old = _check_out(out, args.force)  # refuse before building anything
        trainer = Trainer(config, out, overwrite=args.force)  # builds (validates); writes nothing
        for path in old:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    # `kill` and job schedulers send SIGTERM: take the Ctrl-C path (checkpoint, then exit)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    c = trainer.config
    console.print(f"[bold]meta-rl train[/]: {c.algo} ({c.outer_name}) on {escape(c.env)}, "
                  f"T={c.sampling.meta_batch} E={c.sampling.episodes} "
                  f"K={c.inner.inner_steps}, device {trainer.setup.device}, "
                  f"out {escape(str(out))}", highlight=False)
    try:
        with TrainingProgress(c.iterations, trainer.iteration, console) as progress:
            trainer.callbacks.append(progress)
            trainer.train()
    except KeyboardInterrupt:
        print(f"meta-rl: interrupted after iteration {trainer.iteration}; checkpoint saved, "
              f"continue with: meta-rl train --resume {out}", file=sys.stderr)
        return INTERRUPTED
    except TrainingError as exc:
        print(f"meta-rl: {exc}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    console.print(summary_table(progress.records))
    console.print(f"run written to {out} (evaluate with: meta-rl evaluate {out})",
                  highlight=False, markup=False)
    return 0


def cmd_evaluate(args) -> int:
    from rich.console import Console

    from meta_rl.checkpoint import model_dir
    from meta_rl.evaluation import evaluate
    from meta_rl.report import print_eval, write_eval

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for eval.json and "
                         "adaptation.png")
    console = Console()
    result = evaluate(args.run_dir, iteration=args.iteration, device=args.device,
                      progress=lambda msg: console.print(msg, highlight=False, markup=False),
                      **flags.given(args))
    print_eval(result, console)
    # by default a kept snapshot's evaluation sits beside it, not over the run's own
    paths = write_eval(result, args.out or model_dir(args.run_dir, result.checkpoint))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False,
                  markup=False)
    return 0
