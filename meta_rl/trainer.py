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
import os
import math
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
from meta_rl import distributed
from meta_rl.checkpoint import (CHECKPOINT, atomic_write, load_checkpoint, model_dir,
                                save_checkpoint, snapshot_iterations, snapshot_path)
from meta_rl.config import RunConfig, TrainConfig
from meta_rl.distributed import SINGLE, Shard
from meta_rl.errors import EnvError, NonFiniteError, TrainingError
from meta_rl.policies import Policy, make_policy
from meta_rl.progress import ProgressCallback, ProgressEvent, progress_callback
from meta_rl.runfolder import FolderLock, check_writable, remove_stale_temp_files
from meta_rl.sampling import Sampler, check_memory, make_sampler
from meta_rl.seeding import iteration_seed


METRICS = "metrics.jsonl"
CONFIG = "config.yaml"
ERROR_LOG = "error.log"


def _strict_json(record: dict) -> dict:
    """Non-finite floats as ``null``: ``metrics.jsonl`` stays strict JSON."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()}


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


def build(config: TrainConfig, device: torch.device | None = None,
          shard: Shard = SINGLE) -> Setup:
    """Build family, policy (initialised from ``config.seed``), sampler and learner (for this
    rank's share of the work, with a distributed ``shard``; its GPU is ``LOCAL_RANK``'s)."""
    device = device or config.run.torch_device()
    if device.type == "cuda" and shard.distributed and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    family = envs.make(config.env, **config.env_kwargs)
    # the inner steps' batches and the validation batch, with the graph through them
    check_memory(family, config.sampling.meta_batch, config.sampling.episodes,
                 2 * (config.inner.inner_steps + 1), config.policy.hidden,
                 config.sampling.batch_unit, "a meta-iteration")
    policy = make_policy(family.observation_space, family.action_space, config.policy)
    gen = torch.Generator().manual_seed(config.seed)
    params = {k: v.to(device) for k, v in policy.init_params(gen).items()}
    policy.to(device)
    sampler = make_sampler(family, policy, config.sampling, device, config.run.num_workers,
                           config.run.env_timeout)
    sampler.shard = shard
    learner = make_learner(config, policy, sampler, params, shard)
    return Setup(config, family, policy, sampler, learner, device)


def _cause(exc: BaseException) -> str:
    """The cause of a failed iteration, in one sentence ending with a full stop."""
    if isinstance(exc, NonFiniteError):
        return (f"{exc}; the learning diverged, so start a new run with a smaller learning "
                "rate or max_kl.")
    if isinstance(exc, EnvError):
        return f"{' '.join(str(exc).split())}."
    if isinstance(exc, OSError):
        return f"a file could not be written or read ({exc})."
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}."


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: a checkpoint, metrics, or the config of a run that had not
    finished an iteration (a ``config.yaml`` that is a run's config, not any file of that
    name)."""
    if (folder / CHECKPOINT).exists() or (folder / METRICS).exists():
        return True
    try:
        TrainConfig.from_dict(yaml.safe_load((folder / CONFIG).read_text()))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return True


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

    ``callbacks`` receive each iteration's metrics dict. ``progress`` shows the run's progress
    (``True``: a live bar on a terminal, plain lines elsewhere; ``False``: nothing; or a
    callable of :class:`~meta_rl.progress.ProgressEvent`), as the stage ``stage``. A new trainer
    refuses an ``out`` that already holds a run unless ``overwrite`` (then the old metrics are
    replaced); :meth:`resume` continues one.
    """

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path | None = None,
        callbacks: list[Callable[[dict], None]] | None = None,
        overwrite: bool = False,
        progress: bool | ProgressCallback = True,
        stage: str = "meta-training",
    ):
        self.shard = distributed.current()
        if self.shard.distributed:  # share this machine's cores among its ranks
            cores = max(1, (os.cpu_count() or 1) // distributed.local_world())
            config = config.replace(threads=config.run.threads or cores,
                                    num_workers=config.run.num_workers or cores)
        self.config, self.stage = config, stage
        self.progress = progress if self.shard.rank == 0 else False  # rank 0 owns the console
        self.out = Path(out) if out is not None else None
        self.writes = self.out is not None and self.shard.rank == 0  # and the run folder
        self.callbacks = list(callbacks or [])
        if config.run.threads is not None:
            torch.set_num_threads(config.run.threads)
        self.setup = build(config, shard=self.shard)  # checks; writes nothing, starts nothing
        self._lock = FolderLock(self.out, "trains") if self.writes else None
        try:  # one writer per folder, before anything is written there
            if self._lock is not None:
                self._lock.acquire()
                check_writable(self.out)
                if not overwrite and holds_run(self.out):
                    raise ValueError(
                        f"{self.out} already holds a run; continue it with Trainer.resume (CLI: "
                        "--resume), replace it with overwrite=True (CLI: --force), or choose "
                        "another directory")
            self.shard.check_same(list(self.setup.learner.meta.values()),
                                  "the initial meta-parameters")
        except BaseException:
            self.close()
            raise
        self.iteration = 0
        self.totals = {"env_steps": 0, "wall_s": 0.0}
        self.records: list[dict] = []  # every iteration's metrics so far (the checkpoint has them)
        self._writer = None

    #: config fields a resumed run may change: its length, and how (not what) it computes
    RESUMABLE = ("iterations", *(f.name for f in dataclasses.fields(RunConfig)
                                 if f.name != "device"))

    @classmethod
    def resume(cls, out: str | Path, callbacks=None, progress: bool | ProgressCallback = True,
               stage: str = "meta-training", **overrides) -> "Trainer":
        """Continue the run in ``out`` from its checkpoint.

        ``overrides`` may change the fields in :attr:`RESUMABLE` (``None`` values are ignored),
        e.g. ``iterations=500`` to train on past the original end.
        """
        overrides = {k: v for k, v in overrides.items() if v is not None}
        fixed = sorted(set(overrides) - set(cls.RESUMABLE))
        if fixed:
            raise ValueError(f"a resumed run keeps its config; {', '.join(fixed)} cannot change "
                             f"(only {', '.join(cls.RESUMABLE)} can)")
        folder = Path(out)
        path = folder / CHECKPOINT
        if not path.exists() and (folder / CONFIG).is_file():
            # stopped before its first checkpoint: start afresh, with the config it was given
            config = TrainConfig.from_dict(yaml.safe_load((folder / CONFIG).read_text()))
            return cls(config.replace(**overrides), out, callbacks, overwrite=True,
                       progress=progress, stage=stage)
        if not path.exists():
            raise ValueError(f"nothing to resume in {folder}: it has no {CHECKPOINT} and no "
                             f"{CONFIG}; train a run there first")
        state = load_checkpoint(path)
        config = TrainConfig.from_dict(state["config"]).replace(**overrides)
        check_revision(state, path)
        trainer = cls(config, out, callbacks, overwrite=True, progress=progress, stage=stage)
        try:
            restore_learner(trainer.setup.learner, state, path)
        except BaseException:
            trainer.close()
            raise
        trainer.iteration = state["iteration"]
        trainer.totals = dict(state["totals"])
        trainer.records = list(state.get("metrics", []))
        torch.set_rng_state(state["rng"])
        trainer.shard.check_same(list(trainer.setup.learner.meta.values()),
                                 "the resumed meta-parameters")
        return trainer

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> list[dict]:
        """Run until ``config.iterations``; returns this call's metrics.

        Every way out but success keeps the finished iterations: Ctrl-C (or SIGTERM) saves them
        and re-raises; any failure (non-finite values, an env that raises, hangs or dies, a disk
        error) restores the last good state, saves it, writes the traceback to ``error.log`` and
        raises :class:`TrainingError`, whose one line says the cause and what was saved where.
        :attr:`saved` says the same after an interrupt.
        """
        c = self.config
        learner, family = self.setup.learner, self.setup.family
        history: list[dict] = []
        show, close_progress = progress_callback(self.progress)
        good = None  # the learner's state before the iteration in progress, if any
        try:
            self._prepare_dir()
            show(ProgressEvent(self.stage, self.iteration, c.iterations, "iteration"))
            while self.iteration < c.iterations:
                i = self.iteration
                seed = iteration_seed(c.seed, i)
                tasks = family.sample_tasks(c.sampling.meta_batch, seed=seed)
                good = copy.deepcopy(learner.state_dict())
                start = time.perf_counter()
                metrics = learner.meta_step(tasks, seed)
                seconds = time.perf_counter() - start
                totals = {"env_steps": self.totals["env_steps"] + metrics["env_steps"],
                          "wall_s": self.totals["wall_s"] + seconds}
                record = {
                    "iteration": i + 1,
                    "pre_adapt_return": metrics.pop("pre_adapt_return"),
                    "post_adapt_return": metrics.pop("post_adapt_return"),
                    "env_steps": totals["env_steps"],
                    "wall_s": round(totals["wall_s"], 4),
                    **{k: v for k, v in metrics.items() if k != "env_steps"},
                }
                record["adaptation_gain"] = record["post_adapt_return"] - record["pre_adapt_return"]
                if self.shard.distributed:
                    record["world_size"] = self.shard.world
                history.append(record)
                with deferred_interrupts():  # never inside TensorBoard's writer thread handoff
                    self._log(record)  # before counting the iteration: a resume truncates to it
                    self.iteration, self.totals, good = i + 1, totals, None
                    self.records.append(record)
                shown = {"pre": f"{record['pre_adapt_return']:.2f}",
                         "post": f"{record['post_adapt_return']:.2f}"}
                if "post_adapt_success" in record:
                    shown["success"] = f"{record['post_adapt_success']:.0%}"
                show(ProgressEvent(self.stage, self.iteration, c.iterations, "iteration", {
                    **shown,
                    "env steps/s": f"{metrics['env_steps'] / max(seconds, 1e-9):,.0f}",
                    "s/it": f"{seconds:.2f}"}))
                self._snapshot()  # first: a checkpoint never gets ahead of a snapshot it should have
                if self.iteration % c.run.checkpoint_every == 0 or self.iteration == c.iterations:
                    self._checkpoint()
        except KeyboardInterrupt:
            # Interrupted mid-iteration: the learner may be half-updated; keep the last whole one.
            if good is not None:
                learner.load_state_dict(good)
            self.saved = self._save_progress()
            raise
        except Exception as exc:
            if good is not None:
                learner.load_state_dict(good)
            self.saved = self._save_progress()
            raise TrainingError(f"training stopped at iteration {self.iteration + 1}: "
                                f"{_cause(exc)} {self.saved}{self._log_error(exc)}") from exc
        finally:
            close_progress()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return history

    #: after an interrupt or a failure: one sentence saying what was saved, and where
    saved = ""

    def close(self) -> None:
        """Stop the samplers' worker processes and release the run folder."""
        try:
            self.setup.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _save_progress(self) -> str:
        """Save the finished iterations after an interrupt or a failure; a sentence saying what
        was saved where (in a temporary folder if the run folder cannot be written)."""
        if not self.writes:
            return ""
        resume = f"meta-rl train --resume {self.out}"
        if self.iteration == 0 and not (self.out / CHECKPOINT).exists():
            return (f"No iteration had finished, so there is nothing to save; {resume} starts "
                    "the run afresh with its config.")
        done = f"iteration{'s 1-' if self.iteration > 1 else ' '}{self.iteration}"
        try:
            self._checkpoint()
            self._snapshot()  # in case the interrupt cut this iteration's snapshot short
        except OSError as exc:
            import tempfile

            rescue = Path(tempfile.mkdtemp(prefix="meta-rl-rescue-")) / CHECKPOINT
            save_checkpoint(rescue, self.state())
            return (f"{self.out / CHECKPOINT} could not be written ({exc.strerror}), so {done} "
                    f"are saved in {rescue} instead; copy it there once the folder can be "
                    f"written, then continue with: {resume}")
        return f"{done.capitalize()} are saved; continue with: {resume}"

    def _log_error(self, exc: BaseException) -> str:
        """Append ``exc``'s full traceback (and a worker's, if any) to ``error.log``; a sentence
        saying where it is."""
        import tempfile
        import traceback

        text = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} iteration {self.iteration + 1}\n"
                + "".join(traceback.format_exception(exc))
                + (f"in the worker:\n{exc.detail}" if getattr(exc, "detail", "") else "") + "\n")
        for folder in ([self.out] if self.writes else []) + [Path(tempfile.gettempdir())]:
            try:
                with open(folder / ERROR_LOG, "a") as f:
                    f.write(text)
                return f" The full traceback is in {folder / ERROR_LOG}."
            except OSError:
                continue
        return ""

    # -- run directory --------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        if not self.writes:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.out)  # left by a process killed while writing
        self._truncate_metrics()
        for later in snapshot_iterations(self.out):  # iterations that will be recomputed
            if later > self.iteration:
                path = snapshot_path(self.out, later)
                shutil.rmtree(model_dir(self.out, path), ignore_errors=True)  # its evaluation
                path.unlink()
        text = yaml.safe_dump(self.config.to_dict(), sort_keys=False).encode()
        atomic_write(self.out / CONFIG, lambda f: f.write(text))
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=self.iteration + 1)

    def _log(self, record: dict) -> None:
        if self.writes:
            with open(self.out / METRICS, "a") as f:
                f.write(json.dumps(_strict_json(record)) + "\n")
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    self._writer.add_scalar(f"meta/{key}", value, record["iteration"])
        for cb in self.callbacks:
            cb(record)

    def _truncate_metrics(self) -> None:
        """Make ``metrics.jsonl`` hold exactly the finished iterations (none for a fresh run).

        Later lines belong to iterations that will be recomputed; a last line cut short by a
        killed process is dropped too. A file that lost lines (or was deleted) is rewritten from
        the checkpoint, which keeps every iteration's metrics, and the progress display says so.
        The file is replaced atomically.
        """
        path = self.out / METRICS
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
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
        if len(keep) < self.iteration:
            show, _ = progress_callback(self.progress)
            if len(self.records) == self.iteration:
                keep = [json.dumps(_strict_json(r)) for r in self.records]
                note = "rewritten from the checkpoint"
            else:  # a checkpoint from before it kept the metrics
                note = "the checkpoint (from an older version) cannot restore the others"
            show(ProgressEvent("metrics", note=f"{path} held {len(lines)} of the "
                                               f"{self.iteration} finished iterations; {note}"))
        if not keep and not path.exists():
            return
        data = "".join(ln + "\n" for ln in keep).encode()
        atomic_write(path, lambda f: f.write(data))

    def state(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "iteration": self.iteration,
            "learner": self.setup.learner.state_dict(),
            "totals": dict(self.totals),
            "rng": torch.get_rng_state(),
            "env_revision": self.setup.family.revision,
            "metrics": list(self.records),
        }

    def _checkpoint(self) -> None:
        if self.writes:
            save_checkpoint(self.out / CHECKPOINT, self.state())

    def _snapshot(self) -> None:
        """Keep this iteration's model if ``keep_every`` asks for it and it is not kept yet."""
        every = self.config.run.keep_every
        if not self.writes or not every or self.iteration == 0 or self.iteration % every:
            return
        path = snapshot_path(self.out, self.iteration)
        if not path.is_file():
            save_checkpoint(path, self.state())
