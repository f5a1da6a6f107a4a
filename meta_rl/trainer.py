"""The training loop: meta-iterations, metrics, TensorBoard, checkpoints, resume, Ctrl-C, NaNs.

A run directory holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one JSON object
per iteration), TensorBoard event files and ``checkpoint.pt``; with ``keep_every``, also
``snapshots/iteration-NNNNNN.pt``.

All randomness of iteration ``i`` comes from ``(config.seed, i)``: the tasks, the sampling seeds.
So a run stopped after iteration ``i`` and resumed computes exactly what an uninterrupted run
computes (on CPU), and its ``metrics.jsonl`` matches line for line except for ``wall_s``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

import envs
from meta_rl.algorithms import MetaLearner, make_learner
from meta_rl.checkpoint import (CHECKPOINT, load_checkpoint, model_dir, save_checkpoint,
                                snapshot_iterations, snapshot_path)
from meta_rl.config import RunConfig, TrainConfig
from meta_rl.outer import NonFiniteError
from meta_rl.policies import Policy, make_policy
from meta_rl.sampling import Sampler, make_sampler
from meta_rl.seeding import iteration_seed


METRICS = "metrics.jsonl"


def _strict_json(record: dict) -> dict:
    """Non-finite floats as ``null``: ``metrics.jsonl`` stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()}


class TrainingError(RuntimeError):
    """Training stopped (non-finite values); the last good checkpoint is kept."""


@dataclass
class Setup:
    """Everything built from a config: the family, policy, sampler and meta-learner."""

    config: TrainConfig
    family: envs.TaskFamily
    policy: Policy
    sampler: Sampler
    learner: MetaLearner
    device: torch.device

    def close(self) -> None:
        self.sampler.close()


def build(config: TrainConfig, device: torch.device | None = None) -> Setup:
    """Build family, policy (initialised from ``config.seed``), sampler and learner."""
    device = device or config.run.torch_device()
    family = envs.make(config.env, **config.env_kwargs)
    policy = make_policy(family.observation_space, family.action_space, config.policy)
    gen = torch.Generator().manual_seed(config.seed)
    params = {k: v.to(device) for k, v in policy.init_params(gen).items()}
    policy.to(device)
    sampler = make_sampler(family, policy, config.sampling, device, config.run.num_workers)
    learner = make_learner(config, policy, sampler, params)
    return Setup(config, family, policy, sampler, learner, device)


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run (a checkpoint or metrics written by a :class:`Trainer`)."""
    return (folder / CHECKPOINT).exists() or (folder / METRICS).exists()


def revisions(state: dict) -> tuple[int, int]:
    """``(trained, current)``: the revision of its task family the run in ``state`` was trained
    on (checkpoints from before revisions were recorded count as 1), and this code's."""
    family = envs.registry.family_class(state["config"]["env"])
    return state.get("env_revision", 1), family.revision


def check_revision(state: dict, path: Path) -> None:
    """Raise a ``ValueError`` if the run in ``state`` was trained on another revision of its
    task family than this code's."""
    saved, current = revisions(state)
    if saved != current:
        raise ValueError(
            f"{path} was trained on {state['config']['env']} revision {saved}, and this "
            f"version's is {current} (the tasks changed; the family's docstring says how); train "
            "a new run instead, in another folder"
        )


def restore_learner(learner: MetaLearner, state: dict, path: Path) -> None:
    """Load a checkpoint's learner state, or raise a ``ValueError`` naming the checkpoint."""
    try:
        learner.load_state_dict(state["learner"])
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"checkpoint {path} does not fit its own config ({type(exc).__name__}: {exc}); "
            "it is damaged or from another version"
        ) from None


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT (and SIGTERM where a Python handler turns it into Ctrl-C) until the block
    ends, then deliver it.

    A ``KeyboardInterrupt`` raised inside TensorBoard's ``add_scalar`` can land in the middle of
    its queue's wake-up of the writer thread; ``SummaryWriter.close()`` then waits for that
    thread until its flush timer fires, up to two minutes. Only the main thread can set signal
    handlers; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    held = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):  # SIG_DFL / SIG_IGN never raise inside Python code
            held[sig] = handler
            signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        if pending:
            held[pending[0]](pending[0], None)


class Trainer:
    """Runs meta-iterations for ``config`` and writes the run directory ``out``.

    ``callbacks`` receive each iteration's metrics dict (the console report is one). A new
    trainer refuses an ``out`` that already holds a run unless ``overwrite`` (then the old
    metrics are replaced); :meth:`resume` continues one.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path | None = None,
        callbacks: list[Callable[[dict], None]] | None = None,
        overwrite: bool = False,
    ):
        self.config = config
        self.out = Path(out) if out is not None else None
        if self.out is not None and not overwrite and holds_run(self.out):
            raise ValueError(
                f"{self.out} already holds a run; continue it with Trainer.resume (CLI: --resume), "
                "replace it with overwrite=True (CLI: --force), or choose another directory"
            )
        self.callbacks = list(callbacks or [])
        if config.run.threads is not None:
            torch.set_num_threads(config.run.threads)
        self.setup = build(config)
        self.iteration = 0
        self.totals = {"env_steps": 0, "wall_s": 0.0}
        self._writer = None

    #: config fields a resumed run may change: its length, and how (not what) it computes
    RESUMABLE = ("iterations", *(f.name for f in dataclasses.fields(RunConfig)
                                 if f.name != "device"))

    @classmethod
    def resume(cls, out: str | Path, callbacks=None, **overrides) -> "Trainer":
        """Continue the run in ``out`` from its checkpoint.

        ``overrides`` may change the fields in :attr:`RESUMABLE` (``None`` values are ignored),
        e.g. ``iterations=500`` to train on past the original end.
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        fixed = sorted(set(overrides) - set(cls.RESUMABLE))
        if fixed:
            raise ValueError(f"a resumed run keeps its config; {', '.join(fixed)} cannot change "
                             f"(only {', '.join(cls.RESUMABLE)} can)")
        path = Path(out) / CHECKPOINT
        state = load_checkpoint(path)
        config = TrainConfig.from_dict(state["config"]).replace(**overrides)
        check_revision(state, path)
        trainer = cls(config, out, callbacks, overwrite=True)
        restore_learner(trainer.setup.learner, state, path)
        trainer.iteration = state["iteration"]
        trainer.totals = dict(state["totals"])
        torch.set_rng_state(state["rng"])
        return trainer

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> list[dict]:
        """Run until ``config.iterations``; returns this call's metrics.

        Ctrl-C writes a checkpoint of the last completed iteration and re-raises. Non-finite
        values restore the last good state, checkpoint it, and raise :class:`TrainingError`.
        """
        c = self.config
        learner, family = self.setup.learner, self.setup.family
        history: list[dict] = []
        self._prepare_dir()
        good = None  # the learner's state before the iteration in progress, if any
        try:
            while self.iteration < c.iterations:
                i = self.iteration
                seed = iteration_seed(c.seed, i)
                tasks = family.sample_tasks(c.sampling.meta_batch, seed=seed)
                good = copy.deepcopy(learner.state_dict())
                start = time.perf_counter()
                try:
                    metrics = learner.meta_step(tasks, seed)
                except NonFiniteError as exc:
                    learner.load_state_dict(good)
                    self._checkpoint()
                    raise TrainingError(
                        f"training stopped at iteration {i + 1}: {exc}. The last good state "
                        f"(iteration {i}) is in the checkpoint; start a new run with a smaller "
                        "learning rate or max_kl."
                    ) from None
                totals = {"env_steps": self.totals["env_steps"] + metrics["env_steps"],
                          "wall_s": self.totals["wall_s"] + time.perf_counter() - start}
                record = {
                    "iteration": i + 1,
                    "pre_adapt_return": metrics.pop("pre_adapt_return"),
                    "post_adapt_return": metrics.pop("post_adapt_return"),
                    "env_steps": totals["env_steps"],
                    "wall_s": round(totals["wall_s"], 4),
                    **{k: v for k, v in metrics.items() if k != "env_steps"},
                }
                record["adaptation_gain"] = record["post_adapt_return"] - record["pre_adapt_return"]
                history.append(record)
                with deferred_interrupts():  # never inside TensorBoard's writer thread handoff
                    self._log(record)  # before counting the iteration: a resume truncates to it
                    self.iteration, self.totals, good = i + 1, totals, None
                self._snapshot()  # first: a checkpoint never gets ahead of a snapshot it should have
                if self.iteration % c.run.checkpoint_every == 0 or self.iteration == c.iterations:
                    self._checkpoint()
        except KeyboardInterrupt:
            # Interrupted mid-iteration: the learner may be half-updated; keep the last whole one.
            if good is not None:
                learner.load_state_dict(good)
            self._checkpoint()
            self._snapshot()  # in case the interrupt cut this iteration's snapshot short
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return history

    def close(self) -> None:
        self.setup.close()

    # -- run directory --------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self._truncate_metrics()
        for later in snapshot_iterations(self.out):  # iterations that will be recomputed
            if later > self.iteration:
                path = snapshot_path(self.out, later)
                shutil.rmtree(model_dir(self.out, path), ignore_errors=True)  # its evaluation
                path.unlink()
        with open(self.out / "config.yaml", "w") as f:
            yaml.safe_dump(self.config.to_dict(), f, sort_keys=False)
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.iteration + 1)

    def _log(self, record: dict) -> None:
        if self.out is not None:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(_strict_json(record)) + "\n")
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"meta/{key}", value, record["iteration"])
        for cb in self.callbacks:
            cb(record)

    def _truncate_metrics(self) -> None:
        """Keep the metric lines up to the checkpoint's iteration (none for a fresh run).

        Later lines belong to iterations that will be recomputed; a last line cut short by a
        killed process is dropped too. The file is replaced atomically.
        """
        path = self.out / METRICS
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = []
        for n, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # a write cut short: past the checkpoint anyway
                    break
                raise ValueError(f"{path} line {n} is not JSON; fix or remove that line") from None
            if record.get("iteration", 0) <= self.iteration:
                keep.append(line)
        tmp = path.with_name(f".{METRICS}.tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        os.replace(tmp, path)

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "learner": self.setup.learner.state_dict(),
            "totals": dict(self.totals),
            "rng": torch.get_rng_state(),
            "env_revision": self.setup.family.revision,
        }

    def _checkpoint(self) -> None:
        if self.out is not None:
            save_checkpoint(self.out / CHECKPOINT, self.state())

    def _snapshot(self) -> None:
        """Keep this iteration's model if ``keep_every`` asks for it and it is not kept yet."""
        every = self.config.run.keep_every
        if self.out is None or not every or self.iteration == 0 or self.iteration % every:
            return
        path = snapshot_path(self.out, self.iteration)
        if not path.is_file():
            save_checkpoint(path, self.state())
