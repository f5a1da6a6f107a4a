"""Checkpoints: written atomically, loaded with clear errors.

A checkpoint is a ``torch.save`` dict: ``format``, ``config`` (``TrainConfig.to_dict()``),
``iteration`` (completed meta-iterations), ``learner`` (meta-parameters and optimiser state),
``totals`` (cumulative env steps and wall time), ``rng`` (torch's global RNG state) and
``env_revision`` (the task family's ``revision``; absent from checkpoints older than it, which
count as revision 1).
It is written to a temporary file in the same directory, flushed, then renamed over the old one,
so an interrupted write never leaves a broken ``checkpoint.pt``. A run trained with ``keep_every``
also keeps whole checkpoints of earlier iterations in ``snapshots/iteration-NNNNNN.pt``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from meta_rl.runfolder import publish

FORMAT = "meta_rl.checkpoint/3"
#: older formats this version loads, and how it reads them as the current one
_UPGRADES: dict[str, Callable[[dict], dict]] = {}
#: formats this version cannot load, and why
_RETIRED = {
    "meta_rl.checkpoint/1": "its Gaussian policy's mean and spread were in env units, not "
    "relative to the action box, so its parameters mean something else now; retrain the run",
}
CHECKPOINT = "checkpoint.pt"
#: folder of a run directory that keeps the models of earlier iterations (``keep_every``)
SNAPSHOTS = "snapshots"
REQUIRED = ("config", "iteration", "learner", "totals", "rng")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then rename it
    over ``path``: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        publish(path)  # mkstemp's 0600 would make this file differ from the others
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + ``os.replace``)."""
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint, or raise a ``ValueError`` that says what is wrong with it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path} (train a run there first, or point at its directory)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and state.get("format") in _RETIRED:
        retired = state["format"]
        raise ValueError(f"checkpoint {path} has the retired format {retired}: {_RETIRED[retired]}")
    if isinstance(state, dict) and state.get("format") in _UPGRADES:
        state = _UPGRADES[state["format"]](state)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a meta_rl checkpoint (expected format {FORMAT})")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} is damaged: it lacks {', '.join(missing)}")
    return state


def _from_format_2(state: dict[str, Any]) -> dict[str, Any]:
    """Format 2 kept the policy's parameters and Meta-SGD's rates (``lrs``, with ``rate_opt`` for
    their own Adam) apart; format 3 keeps one dict of meta-parameters, the rates under
    ``lr/<name>``, and the rates' Adam as the second part of a split outer step. Its config was
    flat, which ``TrainConfig.from_dict`` reads."""
    old = state.get("learner")
    if not isinstance(old, dict) or "params" not in old:
        return state  # damaged: the checks below say so
    meta = {**old["params"], **{"lr/" + k: v for k, v in old.get("lrs", {}).items()}}
    outer = old.get("outer")
    if "rate_opt" in old:
        outer = {"main": outer, "side": old["rate_opt"]}
    return {**state, "format": FORMAT, "learner": {"meta": meta, "outer": outer}}


_UPGRADES["meta_rl.checkpoint/2"] = _from_format_2


def snapshot_path(run_dir: str | Path, iteration: int) -> Path:
    """Where the run in ``run_dir`` keeps its model after ``iteration`` meta-iterations."""
    return Path(run_dir) / SNAPSHOTS / f"iteration-{iteration:06d}.pt"


def model_dir(run_dir: str | Path, checkpoint: str | Path) -> Path:
    """The folder for what belongs to one model of the run in ``run_dir`` (its evaluation, its
    pretrained-baseline cache): the run directory for ``checkpoint.pt``, and
    ``snapshots/iteration-NNNNNN/`` beside a kept snapshot."""
    checkpoint = Path(checkpoint)
    return Path(run_dir) if checkpoint.name == CHECKPOINT else checkpoint.with_suffix("")


def snapshot_iterations(run_dir: str | Path) -> list[int]:
    """The iterations whose snapshots the run in ``run_dir`` keeps, in order."""
    folder = Path(run_dir) / SNAPSHOTS
    found = []
    for path in folder.glob("iteration-*.pt") if folder.is_dir() else ():
        number = path.stem.removeprefix("iteration-")
        if number.isdigit():
            found.append(int(number))
    return sorted(found)


def load_iteration(run_dir: str | Path, iteration: int | None = None) -> tuple[dict[str, Any], Path]:
    """The checkpoint of the run in ``run_dir`` after ``iteration`` meta-iterations (default: the
    latest, ``checkpoint.pt``), and its path; a ``ValueError`` names the iterations on offer."""
    run_dir = Path(run_dir)
    latest = run_dir / CHECKPOINT
    if iteration is None:
        return load_checkpoint(latest), latest
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise ValueError(f"iteration must be an integer >= 0, got {iteration!r}")
    path = snapshot_path(run_dir, iteration)
    if path.is_file():
        return load_checkpoint(path), path
    if latest.is_file():
        state = load_checkpoint(latest)
        if state["iteration"] == iteration:
            return state, latest
        kept = [*snapshot_iterations(run_dir), state["iteration"]]
        raise ValueError(
            f"the run in {run_dir} keeps no model of iteration {iteration}; it has "
            f"{', '.join(map(str, sorted(set(kept))))} (train with keep_every, CLI --keep-every, "
            "to keep more)"
        )
    return load_checkpoint(latest), latest  # raises: no checkpoint there
