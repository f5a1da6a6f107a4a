"""The ``meta-rl`` entry point: the argument parser, and every user error as one line.

    meta-rl envs
    meta-rl presets
    meta-rl check-env NAME|module:Class
    meta-rl train [--preset NAME | --config FILE.yaml] [--<setting> VALUE ...] [--out DIR]
    meta-rl train --resume DIR [--iterations N]
    meta-rl evaluate DIR [--<eval setting> VALUE ...] [--iteration N] [--out DIR2]

The settings' flags are made from the config (``meta_rl.flags``); ``meta-rl train --help`` lists
them with their defaults. Every user error (a bad flag value, an unknown env, unreadable YAML, a
missing checkpoint, an existing run directory...) prints one line on stderr and exits with status
2, with no traceback and nothing written. What the subcommands do is in ``meta_rl.commands``.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Sequence

from meta_rl import commands
from meta_rl.config import SECTIONS, EvalConfig, TrainConfig
from meta_rl.flags import add_flags
from meta_rl.presets import preset_names
from meta_rl.errors import TrainingError

USAGE_ERROR = 2


class CLIError(Exception):
    """A usage error found by the parser: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str):
        raise CLIError(message)


def add_train_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """Flags for every setting of a training config but ``skip``, in groups by section; the
    ``eval`` section's as ``--eval-<name>`` (the protocol the run is evaluated with by default)."""
    add_flags(parser, TrainConfig, skip=skip)
    for f in fields(TrainConfig):
        if f.metadata.get("section"):
            cls = SECTIONS[f.name]
            group = parser.add_argument_group(f"{f.name} settings",
                                              " ".join(cls.__doc__.split("\n\n")[0].replace("``", "").split()))
            add_flags(group, cls, f.name, prefix="eval-" if f.name == "eval" else "", skip=skip)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="meta-rl", description="Meta-RL (MAML, Meta-SGD, Reptile) on families "
                     "of Gymnasium tasks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("envs", help="list the registered task families").set_defaults(
        run=commands.cmd_envs)
    sub.add_parser("presets", help="list the shipped config presets").set_defaults(
        run=commands.cmd_presets)
    p = sub.add_parser("check-env", help="check a task family against the contract")
    p.add_argument("name", help="registered family name or module:Class")
    p.set_defaults(run=commands.cmd_check_env)

    p = sub.add_parser("train", help="meta-train a policy (writes a run directory)")
    p.add_argument("--preset", help=f"a shipped preset ({', '.join(preset_names())})")
    p.add_argument("--config", help="a YAML config file (or a preset name)")
    p.add_argument("--out", help="run directory (default runs/<env>-<algo>-s<seed>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    add_train_flags(p)
    p.set_defaults(run=commands.cmd_train)

    p = sub.add_parser("evaluate", help="fast adaptation on held-out tasks, with baselines")
    p.add_argument("run_dir", metavar="DIR", help="a run directory written by meta-rl train")
    add_flags(p, EvalConfig, default_note="default: the run's eval setting; built in")
    p.add_argument("--iteration", type=int, default=None,
                   help="evaluate the model kept after N iterations (see train --keep-every; "
                        "default: the latest)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="where the policy-gradient methods run (default: the run's)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="folder for eval.json and adaptation.png (default: the run directory, "
                        "or snapshots/iteration-NNNNNN/ for a kept --iteration; give another to "
                        "keep an earlier evaluation)")
    p.set_defaults(run=commands.cmd_evaluate)
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
    try:  # everything, imports of torch included: Ctrl-C at any moment is one line
        args = build_parser().parse_args(argv)
        seed_global_rngs(argv)
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
        return commands.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
