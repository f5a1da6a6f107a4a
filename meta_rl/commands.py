"""What each ``meta-rl`` subcommand does, given its parsed arguments; each returns an exit status.

User errors are ``ValueError``s naming the value and the fix (the entry point, ``meta_rl.cli``,
prints them as one line). Ctrl-C or SIGTERM during training writes a checkpoint of the last
completed iteration and exits 130.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from meta_rl import flags
from meta_rl.presets import load_yaml_config, preset_names, resolve
from meta_rl.errors import TrainingError

INTERRUPTED = 130

# Files a run writes; --force removes exactly these (and nothing else the user keeps there).
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "tensorboard", "eval.json",
             "adaptation.png", "training.png", "pretrained", "snapshots", "baselines.json",
             "error.log")


def cmd_envs(args) -> int:
    import envs
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Registered task families")
    # names are never cut or wrapped: the description folds instead
    table.add_column("name", no_wrap=True, min_width=max(map(len, envs.names())))
    table.add_column("what varies · horizon · env · actions", overflow="fold", ratio=1)
    for name in envs.names():
        cls = envs.registry.family_class(name)
        try:
            family = cls()
            space = family.action_space
            actions = (f"Discrete({space.n})" if hasattr(space, "n")
                       else f"{type(space).__name__}{space.shape}")
            about = (f"{cls.varies} · {family.horizon} steps · "
                     f"{'batched (torch)' if family.batched else 'worker processes'} · {actions}")
        except ImportError as exc:  # MuJoCo families without mujoco installed
            about = f"{cls.varies} · unavailable: {exc}"
        table.add_row(escape(name), escape(about))
    Console().print(table)
    return 0


def cmd_presets(args) -> int:
    from meta_rl.config import TrainConfig

    rows = [("preset", "env", "algo", "outer", "tasks", "episodes", "iterations")]
    for name in preset_names():
        c = TrainConfig.from_dict(load_yaml_config(name))
        rows.append((name, c.env, c.algo, c.outer_name, str(c.sampling.meta_batch),
                     str(c.sampling.episodes), str(c.iterations)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:  # plain, aligned, never cut: names copy as they are
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
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
                         "(no config.yaml, checkpoint.pt or metrics.jsonl); choose another --out")
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


@contextlib.contextmanager
def _catch_interrupts():
    """Ctrl-C or SIGTERM (what ``kill`` and job schedulers send): the first raises
    ``KeyboardInterrupt``, so the run saves what it finished and exits; a second exits at once,
    with one line, keeping whatever was saved already. The old handlers come back after."""
    count = []

    def handle(signum, frame):
        count.append(signum)
        if len(count) > 1:
            os.write(2, b"meta-rl: interrupted again; exiting now (what was saved stays)\n")
            os._exit(INTERRUPTED)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def cmd_train(args) -> int:
    with _catch_interrupts():
        return _train(args)


def _train(args) -> int:
    from rich.console import Console
    from rich.markup import escape

    from meta_rl import distributed
    from meta_rl.progress import ConsoleProgress, summary_table
    from meta_rl.trainer import Trainer

    if args.resume:
        overrides = _resume_overrides(args)
        out = Path(args.resume)
        shard = _join(out, overrides.get("device"))
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
        shard = _join(None, config.run.device)
    console = Console(quiet=shard.rank != 0)  # rank 0 alone writes the console and the run
    display = ConsoleProgress(console)
    rank = f"rank {shard.rank}: " if shard.distributed else ""
    if args.resume:
        trainer = Trainer.resume(out, progress=display, **overrides)  # builds; writes nothing
        done, total = trainer.iteration, trainer.config.iterations
        if done >= total:
            trainer.close()
            raise ValueError(f"the run in {out} has already done {done} of {total} iterations; "
                             "pass a larger --iterations with --resume to continue")
    else:
        trainer = Trainer(config, out, overwrite=args.force, progress=display)  # writes nothing
        for path in old if shard.rank == 0 else []:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    c = trainer.config
    console.print(f"[bold]meta-rl train[/]: {c.algo} ({c.outer_name}) on {escape(c.env)}, "
                  f"T={c.sampling.meta_batch} E={c.sampling.episodes} "
                  f"K={c.inner.inner_steps}, device {trainer.setup.device}"
                  + (f", {shard.world} ranks" if shard.distributed else "")
                  + f", out {escape(str(out))}", highlight=False, soft_wrap=True)
    try:
        with display:
            history = trainer.train()
    except KeyboardInterrupt:
        print(f"meta-rl: {rank}interrupted during iteration {trainer.iteration + 1}. "
              f"{trainer.saved}", file=sys.stderr)
        return INTERRUPTED
    except TrainingError as exc:
        print(f"meta-rl: {rank}{exc}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
        distributed.leave()
    console.print(summary_table(history))
    for line in (f"run written to {out}", f"evaluate it with: meta-rl evaluate {out}"):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    return 0


def _join(resume: Path | None, device: str | None):
    """This process's shard: under ``torchrun`` (several ranks) it joins the process group,
    with the backend for the run's device (read from the checkpoint when resuming)."""
    from meta_rl import distributed

    if not distributed.launched():
        return distributed.SINGLE
    if device is None and resume is not None:
        import yaml

        from meta_rl.config import TrainConfig

        saved = resume / "config.yaml"  # the run's config, as its checkpoint has it
        if saved.is_file():
            device = TrainConfig.from_dict(yaml.safe_load(saved.read_text())).run.device
    return distributed.init(device or "auto")


def cmd_evaluate(args) -> int:
    with _catch_interrupts():
        return _evaluate(args)


def _evaluate(args) -> int:
    from rich.console import Console

    from meta_rl.checkpoint import model_dir
    from meta_rl.evaluation import evaluate
    from meta_rl.report import print_eval, write_eval

    from meta_rl.checkpoint import CHECKPOINT, snapshot_path
    from meta_rl.progress import ConsoleProgress
    from meta_rl.runfolder import FolderLock, check_writable

    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for eval.json and "
                         "adaptation.png")
    # by default a kept snapshot's evaluation sits beside it, not over the run's own
    snapshot = None if args.iteration is None else snapshot_path(args.run_dir, args.iteration)
    model = snapshot if snapshot is not None and snapshot.is_file() else (
        Path(args.run_dir) / CHECKPOINT)
    out = Path(args.out) if args.out else model_dir(args.run_dir, model)
    console = Console()
    with FolderLock(out, "writes an evaluation"), ConsoleProgress(console) as display:
        check_writable(out)  # before the work, not after it
        result = evaluate(args.run_dir, iteration=args.iteration, device=args.device,
                          progress=display, **flags.given(args))
        print_eval(result, console)
        paths = write_eval(result, out)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False,
                  markup=False, soft_wrap=True)
    return 0
