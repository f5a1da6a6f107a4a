"""The ``meta-rl`` command: list families, check one, meta-train, evaluate.

    meta-rl envs
    meta-rl presets
    meta-rl check-env NAME|module:Class
    meta-rl train [--preset NAME | --config FILE.yaml] [--env NAME] [--algo ...] [flags] [--out DIR]
    meta-rl train --resume DIR [--iterations N]
    meta-rl evaluate DIR [--tasks 40] [--steps 3] [--episodes 20] [--seed S] [--out DIR2]

Configuration precedence: defaults < preset or YAML file < command-line flags. Every user error
(bad flag value, unknown env, unreadable YAML, missing checkpoint, existing run directory...)
prints one line on stderr and exits with status 2, with no traceback and nothing written.
Ctrl-C during training writes a checkpoint of the last completed iteration and exits 130.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml

from meta_rl.trainer import TrainingError

USAGE_ERROR = 2
INTERRUPTED = 130

# Files a run writes; --force removes exactly these (and nothing else the user keeps there).
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoint.pt", "tensorboard", "eval.json",
             "adaptation.png", "training.png", "pretrained", "snapshots")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str):
        raise CLIError(message)


# -- presets and config files -------------------------------------------------------------------


def preset_names() -> list[str]:
    """Names of the shipped presets (``meta_rl/presets/*.yaml`` without the suffix)."""
    folder = resources.files("meta_rl") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_yaml_config(source: str) -> dict[str, Any]:
    """A config mapping from a YAML file path or a preset name; clear errors for anything else."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise CLIError(f"config file {source} does not exist (give a YAML path or one of the "
                           f"presets: {', '.join(preset_names())})")
        try:
            text = path.read_text()
        except OSError as exc:
            raise CLIError(f"cannot read config file {source}: {exc.strerror}") from None
    elif source in preset_names():
        text = (resources.files("meta_rl") / "presets" / f"{source}.yaml").read_text()
    else:
        raise CLIError(f"unknown preset {source!r}; presets: {', '.join(preset_names())} "
                       "(or give a path to a .yaml file)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CLIError(f"config {source} is not valid YAML{where}: "
                       f"{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CLIError(f"config {source} must be a mapping of keys to values, "
                       f"got a {type(data).__name__}")
    return data


# Flags of `train` that map one-to-one onto TrainConfig fields (dest -> field).
_TRAIN_FLAGS = {
    "env": "env", "algo": "algo", "outer": "outer", "iterations": "iterations",
    "meta_batch": "meta_batch", "episodes": "episodes", "inner_steps": "inner_steps",
    "inner_lr": "inner_lr", "outer_lr": "outer_lr", "max_kl": "max_kl", "hidden": "hidden",
    "seed": "seed", "device": "device", "first_order": "first_order", "horizon": None,
    "threads": "threads", "num_workers": "num_workers", "checkpoint_every": "checkpoint_every",
    "keep_every": "keep_every",
    "fisher_fraction": "fisher_fraction", "batch_unit": "batch_unit", "gamma": "gamma",
    "gae_lambda": "gae_lambda", "rate_lr": "rate_lr",
}


def resolve_config(args: argparse.Namespace):
    """defaults < --preset/--config < flags, validated (a ValueError names the bad value)."""
    from meta_rl.config import TrainConfig

    data: dict[str, Any] = {}
    source = args.preset or args.config
    if args.preset and args.config:
        raise CLIError("give --preset or --config, not both")
    if source:
        data.update(load_yaml_config(source))
    for dest, key in _TRAIN_FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        if dest == "horizon":
            data["env_kwargs"] = {**(data.get("env_kwargs") or {}), "horizon": value}
        else:
            data[key] = value
    return TrainConfig.from_dict(data)


# -- commands -----------------------------------------------------------------------------------


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
    for name in preset_names():
        data = load_yaml_config(name)
        print(f"{name:28s} {data.get('env', '?'):16s} {data.get('algo', 'maml'):8s} "
              f"T={data.get('meta_batch')} E={data.get('episodes')} iterations={data.get('iterations')}")
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
        raise CLIError(f"--out {out} exists and is not a directory; choose another path")
    existing = [out / name for name in RUN_FILES if (out / name).exists()]
    if holds_run(out):
        if not force:
            raise CLIError(f"--out {out} already holds a run; continue it with --resume {out}, "
                           "replace it with --force, or choose another --out")
        return existing
    if existing:  # files with a run's names, but no run: not ours to delete
        raise CLIError(f"--out {out} has {', '.join(p.name for p in existing)} but no run "
                       "(no checkpoint.pt or metrics.jsonl); choose another --out")
    return []


def _resume_overrides(args) -> dict:
    """The flags ``--resume`` accepts (:attr:`Trainer.RESUMABLE`); any other is an error."""
    from meta_rl.trainer import Trainer

    given = {k for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    refused = sorted(given - set(Trainer.RESUMABLE))
    refused += [k for k in ("preset", "config", "out", "force") if getattr(args, k)]
    if refused:
        flags = ", ".join("--" + k.replace("_", "-") for k in refused)
        allowed = ", ".join("--" + k.replace("_", "-") for k in Trainer.RESUMABLE)
        raise CLIError(f"--resume continues a run with its saved config; {flags} cannot be given "
                       f"with it (only {allowed} can)")
    return {k: getattr(args, k) for k in given}


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
            raise CLIError(f"the run in {out} has already done {done} of {total} iterations; "
                           "pass a larger --iterations with --resume to continue")
    else:
        config = resolve_config(args)
        config.resolved_device()  # --device cuda without CUDA: fail before writing anything
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
                  f"T={c.meta_batch} E={c.episodes} K={c.inner_steps}, device "
                  f"{trainer.setup.device}, out {escape(str(out))}", highlight=False)
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
    from meta_rl.evaluation import check_methods, evaluate
    from meta_rl.report import print_eval, write_eval

    try:
        methods = check_methods(args.baselines)
    except ValueError as exc:
        raise CLIError(f"--baselines: {exc}") from None
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise CLIError(f"--out {args.out} is a file; give a folder for eval.json and "
                       "adaptation.png")
    console = Console()
    result = evaluate(args.run_dir, tasks=args.tasks, steps=args.steps, episodes=args.episodes,
                      seed=args.seed, methods=methods, device=args.device,
                      ppo_tasks=args.ppo_tasks, later_lr_scale=args.later_lr_scale,
                      batch_unit=args.batch_unit, later_lr_decay=args.later_lr_decay,
                      iteration=args.iteration,
                      progress=lambda msg: console.print(msg, highlight=False, markup=False))
    print_eval(result, console)
    # by default a kept snapshot's evaluation sits beside it, not over the run's own
    paths = write_eval(result, args.out or model_dir(args.run_dir, result.checkpoint))
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False,
                  markup=False)
    return 0


# -- parser -------------------------------------------------------------------------------------


def _number(kind: type, ok, what: str):
    """An argparse type: ``kind(text)`` if ``ok`` of it, else an error saying it ``what``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
_unit_float = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _hidden(text: str) -> tuple[int, ...]:
    from meta_rl.config import parse_hidden

    try:
        return parse_hidden(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meta-rl", description="Meta-RL (MAML, Meta-SGD, Reptile) on families of "
                     "Gymnasium tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("envs", help="list the registered task families").set_defaults(run=cmd_envs)
    sub.add_parser("presets", help="list the shipped config presets").set_defaults(run=cmd_presets)
    p = sub.add_parser("check-env", help="check a task family against the contract")
    p.add_argument("name", help="registered family name or module:Class")
    p.set_defaults(run=cmd_check_env)

    p = sub.add_parser("train", help="meta-train a policy (writes a run directory)")
    p.add_argument("--preset", help=f"a shipped preset ({', '.join(preset_names())})")
    p.add_argument("--config", help="a YAML config file (or a preset name)")
    p.add_argument("--env", help="family name or module:Class (default Navigation2D)")
    p.add_argument("--algo", choices=["maml", "metasgd", "reptile"])
    p.add_argument("--outer", choices=["trpo", "adam", "sgd"],
                   help="outer optimiser (maml/metasgd: trpo, adam; reptile: sgd, adam)")
    p.add_argument("--iterations", type=_positive_int)
    p.add_argument("--meta-batch", type=_positive_int, help="tasks per meta-iteration (T)")
    p.add_argument("--episodes", type=_positive_int, help="episodes per task and step (E)")
    p.add_argument("--batch-unit", choices=["episodes", "steps"],
                   help="count a batch in episodes (E per task) or env steps (E x horizon per "
                        "task, whole episodes; rllab's rule)")
    p.add_argument("--inner-steps", type=_nonnegative_int, help="inner policy-gradient steps (K)")
    p.add_argument("--inner-lr", type=_positive_float, help="inner step size")
    p.add_argument("--outer-lr", type=_positive_float, help="Adam lr, or Reptile's epsilon")
    p.add_argument("--rate-lr", type=_positive_float,
                   help="Meta-SGD: an Adam of this lr for the learned inner rates, apart from "
                        "the outer step (default: the outer step updates them)")
    p.add_argument("--max-kl", type=_positive_float, help="TRPO trust region")
    p.add_argument("--fisher-fraction", type=_positive_float,
                   help="TRPO: fraction of time steps for curvature products, in (0, 1] (default 0.2; 1 is exact)")
    p.add_argument("--gamma", type=_unit_float, help="discount factor (default 0.99)")
    p.add_argument("--gae-lambda", type=_unit_float,
                   help="GAE lambda of the advantages (default 1: return minus baseline, the "
                        "MAML paper's)")
    p.add_argument("--first-order", action=argparse.BooleanOptionalAction, default=None,
                   help="first-order MAML (--no-first-order undoes a preset's)")
    p.add_argument("--hidden", type=_hidden, help="hidden sizes, e.g. 100,100")
    p.add_argument("--horizon", type=_positive_int, help="episode length (family default if unset)")
    p.add_argument("--seed", type=_nonnegative_int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=_positive_int, help="torch threads in the main process")
    p.add_argument("--num-workers", type=_positive_int,
                   help="env steppers for MuJoCo/custom families: the main process and N-1 "
                        "worker processes (default: one per CPU core)")
    p.add_argument("--checkpoint-every", type=_positive_int)
    p.add_argument("--keep-every", type=_nonnegative_int,
                   help="also keep the model every N iterations in snapshots/ (default 0: none; "
                        "evaluate one with meta-rl evaluate DIR --iteration N)")
    p.add_argument("--out", help="run directory (default runs/<env>-<algo>-s<seed>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="fast adaptation on held-out tasks, with baselines")
    p.add_argument("run_dir", metavar="DIR", help="a run directory written by meta-rl train")
    p.add_argument("--tasks", type=_positive_int, default=40, help="held-out tasks")
    p.add_argument("--steps", type=_nonnegative_int, default=3, help="adaptation steps K")
    p.add_argument("--episodes", type=_positive_int, default=20, help="episodes per task and step")
    p.add_argument("--batch-unit", choices=["episodes", "steps"], default=None,
                   help="count a batch in episodes or in env steps (E x horizon per task; the "
                        "MAML authors' rule); default: the run's")
    p.add_argument("--seed", type=_nonnegative_int, default=None,
                   help="evaluation seed (default: the run's; tasks never overlap training's)")
    p.add_argument("--baselines", default="meta,random,pretrained,ppo",
                   help="methods to run: meta,random,pretrained,ppo")
    p.add_argument("--ppo-tasks", type=_positive_int, default=None,
                   help="run the PPO baseline on the first N tasks only (it is the slow one)")
    p.add_argument("--later-lr-scale", type=_positive_float, default=1.0,
                   help="inner step size after the first step, relative to the first (the MAML "
                        "paper's evaluation: 0.5)")
    p.add_argument("--later-lr-decay", type=_positive_float, default=1.0,
                   help="multiply the step size again at every step after the second (default 1: "
                        "every later step at --later-lr-scale)")
    p.add_argument("--iteration", type=_nonnegative_int, default=None,
                   help="evaluate the model kept after N iterations (see train --keep-every; "
                        "default: the latest)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for eval.json and adaptation.png (default: the run directory, "
                        "or snapshots/iteration-NNNNNN/ for a kept --iteration; give another to "
                        "keep an earlier evaluation)")
    p.set_defaults(run=cmd_evaluate)
    return parser


def seed_global_rngs(argv: Sequence[str]) -> None:
    """Seed Python's, NumPy's and torch's global RNGs from ``--seed`` (default 0).

    Library code takes explicit seeds and generators; this only pins what third-party code
    (e.g. a user's family) might draw from the global RNGs. Entry points call it, nothing else.
    """
    import random

    import numpy as np
    import torch

    seed = 0
    for i, arg in enumerate(argv):  # the last --seed wins, as in argparse
        text = arg[len("--seed="):] if arg.startswith("--seed=") else (
            argv[i + 1] if arg == "--seed" and i + 1 < len(argv) else None)
        if text is not None and text.isdigit():
            seed = int(text)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``meta-rl``; returns the exit status."""
    if os.getcwd() not in sys.path:  # so that module:Class finds the user's own modules
        sys.path.insert(0, os.getcwd())
    argv = list(sys.argv[1:] if argv is None else argv)
    seed_global_rngs(argv)
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except BrokenPipeError:  # e.g. `meta-rl presets | head`: the reader left; say nothing
        sys.stdout = open(os.devnull, "w")
        return 0
    except (CLIError, ValueError, ImportError, OSError) as exc:
        # ValueError: bad input named by the library; ImportError: e.g. a MuJoCo family without
        # mujoco (the message gives the pip command); OSError: an unwritable or missing path
        print(f"meta-rl: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return USAGE_ERROR
    except TrainingError as exc:  # non-finite values (e.g. while pretraining a baseline)
        print(f"meta-rl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meta-rl: interrupted", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
