"""The evaluation protocol: K-step adaptation curves on held-out tasks, for the meta-learned policy
and the baselines (``meta_rl.baselines``), every method on the same tasks.

:func:`evaluate` rebuilds a run from its checkpoint, samples ``tasks`` held-out tasks from the
evaluation seed stream (``meta_rl.seeding``: never a seed training used), and for every method
reports the mean return over those tasks after ``0, 1, .., K`` adaptation steps, with a 95%
confidence interval across tasks (``meta_rl.stats``). What it does comes from an
:class:`~meta_rl.config.EvalConfig`: the run's own ``eval`` settings unless told otherwise.

- ``meta`` adapts with the run's inner rule from its meta-parameters (MAML and Reptile with
  ``inner_lr``, Meta-SGD with its learned rates), with :func:`~meta_rl.inner.adapt`, as training
  does. The return after ``k`` steps is the mean return of the ``E`` episodes sampled with the
  parameters after ``k`` steps (for ``k < K`` those are the episodes of inner step ``k``; one more
  batch is sampled after step ``K``). Step ``k`` of every policy-gradient method uses rollout seed
  ``rollout_seed + k``, so the methods see common random numbers and the step-``k`` figures do
  not depend on ``K``. Steps after the first take the step sizes of
  :func:`~meta_rl.inner.step_scales` (``later_lr_scale``, ``later_lr_decay``), for every
  policy-gradient method alike. With ``batch_unit="steps"`` a batch is whole episodes up to
  ``E * H`` env steps per task (the MAML authors' sampler), and a task's return is the mean over
  however many episodes that gave.

Everything is deterministic for a seed on CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meta_rl import baselines
from meta_rl.checkpoint import load_iteration, model_dir
from meta_rl.config import EvalConfig, TrainConfig
from meta_rl.inner import FixedStep, LearnedRates, adapt, step_scales
from meta_rl.progress import ProgressCallback, ProgressEvent, progress_callback
from meta_rl.sampling import check_memory
from meta_rl.seeding import eval_seeds, training_seeds
from meta_rl.stats import MethodResult, ci_method, summarize
from meta_rl.trainer import Setup, build, restore_learner, revisions


@dataclass
class EvalResult:
    """What :func:`evaluate` measured; ``to_dict`` is the ``eval.json`` schema."""

    run: str
    family: str
    algo: str
    seed: int
    steps: int
    episodes: int
    horizon: int
    tasks: list
    """the held-out tasks (the family's Task records)"""
    task_seed: int
    rollout_seed: int
    methods: dict[str, MethodResult]
    ci_method: str
    later_lr_scale: float = 1.0
    """inner step size of step 2, relative to step 1"""
    later_lr_decay: float = 1.0
    """factor applied to the step size at every step after the second"""
    later_kl: float | None = None
    """steps after a method's trained ones move each task's policy at most this times as far
    (KL) as its first step did (None: plain steps)"""
    split: str = "test"
    """the family's split the tasks came from ("test": held out; "train": training tasks)"""
    batch_unit: str = "episodes"
    """what ``episodes`` counted: episodes, or env steps in units of the horizon"""
    iteration: int | None = None
    """meta-iterations the evaluated model had completed"""
    checkpoint: str = ""
    """the checkpoint file evaluated (``checkpoint.pt``, or a kept snapshot)"""
    env_revision: int = 1
    """the task family's ``revision`` the held-out tasks were run on (this code's)"""
    trained_env_revision: int = 1
    """the revision the model was trained on (1 for checkpoints that predate revisions)"""

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "tasks": len(self.tasks),
            "seed": self.seed,
            "steps": list(range(self.steps + 1)),
            "methods": {name: m.to_dict() for name, m in self.methods.items()},
            "algo": self.algo,
            "episodes": self.episodes,
            "horizon": self.horizon,
            "run": self.run,
            "iteration": self.iteration,
            "checkpoint": self.checkpoint,
            "task_seed": self.task_seed,
            "rollout_seed": self.rollout_seed,
            "ci": self.ci_method,
            "later_lr_scale": self.later_lr_scale,
            "later_lr_decay": self.later_lr_decay,
            "later_kl": self.later_kl,
            "split": self.split,
            "batch_unit": self.batch_unit,
            "env_revision": self.env_revision,
            "trained_env_revision": self.trained_env_revision,
            "task_list": [t.to_json() for t in self.tasks],
        }


def evaluate(run_dir: str | Path, config: EvalConfig | None = None, *,
             iteration: int | None = None, device: str | torch.device | None = None,
             progress: bool | ProgressCallback = True, **settings: Any) -> EvalResult:
    """Adaptation curves of the run in ``run_dir`` and the baselines on held-out tasks.

    ``config`` (default: the run's own ``eval`` settings), with any of its fields changed by
    ``settings`` (e.g. ``tasks=10, methods="meta,random"``), says what to measure.
    ``iteration`` evaluates the model the run kept after that many meta-iterations (its
    ``keep_every`` snapshots; default: the latest checkpoint); a kept model's pretrained
    baseline is cached beside it. ``device`` runs the policy-gradient methods there (default:
    the run's). ``progress`` shows each stage's progress (``True``: on the console; ``False``:
    nothing; or a callable of :class:`~meta_rl.progress.ProgressEvent`).
    """
    run_dir = Path(run_dir)
    state, checkpoint = load_iteration(run_dir, iteration)
    run_config = TrainConfig.from_dict(state["config"])
    ev = dataclasses.replace(config or run_config.eval, **settings)
    seed = run_config.seed if ev.seed is None else ev.seed
    if "pretrained" in ev.methods and state["iteration"] < 1:
        raise ValueError(
            f"the run in {run_dir} has no completed iteration, so the pretrained baseline has no "
            "budget; train it first or leave out 'pretrained'"
        )
    eval_config = run_config.replace(episodes=ev.episodes,
                                     batch_unit=ev.batch_unit or run_config.sampling.batch_unit,
                                     **({} if device is None else {"device": str(device)}))
    step_scales(ev.steps, ev.later_lr_scale, ev.later_lr_decay)  # (checks them first)
    task_seed, rollout_seed, ppo_seed = eval_seeds(seed, training_seeds(run_config))
    show, close_progress = progress_callback(progress)
    trained_revision, revision = revisions(state)
    if trained_revision != revision:  # allowed (e.g. to measure transfer), but never silently
        message = (f"{checkpoint} was trained on {run_config.env} revision {trained_revision}, "
                   f"and this version's tasks are revision {revision} (the family's docstring "
                   "says what changed); its returns are measured on tasks it was not trained on")
        if progress is False:
            warnings.warn(message, stacklevel=2)
        show(ProgressEvent("warning", note=f"warning: {message}"))

    # build() draws nn.Linear's default init from torch's global RNG, and SB3 seeds the global
    # RNGs: evaluation leaves them (and the thread count) as it found them.
    with baselines.preserved_globals():
        setup = build(eval_config, eval_config.run.torch_device())
        try:
            check_memory(setup.family, ev.tasks, ev.episodes, 1, run_config.policy.hidden,
                         eval_config.sampling.batch_unit, "an evaluation step")
            restore_learner(setup.learner, state, checkpoint)
            held_out = setup.family.sample_split(ev.tasks, task_seed, ev.split)
            home = model_dir(run_dir, checkpoint)
            results: dict[str, MethodResult] = {}
            for name in ev.methods:
                start = time.perf_counter()
                if name == "ppo":
                    returns, spent, success = baselines.ppo_curve(
                        setup.family, held_out[:ev.ppo_tasks], run_config, ev.steps,
                        ev.episodes, ppo_seed, show)
                    extra = {"seed": ppo_seed}
                else:
                    method = _method(name, setup, state, run_config, ev, seed, home, show)
                    start = time.perf_counter()
                    returns, spent, success = adaptation_curve(setup, method, held_out,
                                                               rollout_seed, ev, name, show)
                    extra = method.extra
                results[name] = summarize(returns, spent, time.perf_counter() - start, success,
                                          **extra)
        finally:
            setup.close()
            close_progress()

    return EvalResult(
        run=str(run_dir), family=setup.family.name, algo=run_config.algo, seed=seed,
        steps=ev.steps, episodes=ev.episodes, horizon=setup.family.horizon, tasks=held_out,
        task_seed=task_seed, rollout_seed=rollout_seed, methods=results, ci_method=ci_method(),
        later_lr_scale=ev.later_lr_scale, later_lr_decay=ev.later_lr_decay,
        later_kl=ev.later_kl, split=ev.split, batch_unit=eval_config.sampling.batch_unit,
        iteration=int(state["iteration"]), checkpoint=str(checkpoint), env_revision=revision,
        trained_env_revision=trained_revision,
    )


def _method(name: str, setup: Setup, state: dict, run_config: TrainConfig, ev: EvalConfig,
            seed: int, home: Path, progress: ProgressCallback) -> baselines.Method:
    """How method ``name`` adapts: the run's own rule from its meta-parameters (``meta``), or a
    baseline's start with a step size chosen on validation tasks (``home``: the evaluated
    model's folder, where the baselines' choices and the pretrained policy are cached)."""
    if name == "meta":
        learner = setup.learner
        lr = "learned" if isinstance(learner.rule, LearnedRates) else learner.rule.lr
        return baselines.Method(learner.rule, learner.meta, run_config.inner.inner_steps,
                                {"iteration": int(state["iteration"]), "inner_lr": lr})
    if name == "random":
        meta, extra = baselines.random_init(setup, seed)
    else:
        meta, extra = baselines.pretrained(setup, run_config, int(state["iteration"]), home,
                                           progress)
    lr, choice = baselines.choose_step_size(
        name, meta, home, ev, run_config.inner.inner_lr, seed,
        lambda rule, start, tasks, rollout_seed: adaptation_curve(
            setup, baselines.Method(rule, start, 1), tasks, rollout_seed, ev)[0],
        lambda n, task_seed: setup.family.sample_tasks(n, seed=task_seed),
        training_seeds(run_config), progress)
    return baselines.Method(FixedStep(lr), meta, 1, {**extra, "inner_lr": lr, **choice})


def adaptation_curve(setup: Setup, method: baselines.Method, tasks: list, seed: int,
                     ev: EvalConfig, stage: str = "adaptation",
                     progress: ProgressCallback | None = None):
    """Per-task mean returns ``[K + 1, T]`` after ``0..K`` steps of ``method`` (step ``k`` at
    :func:`~meta_rl.inner.step_scales` times its step size, the steps after its trained ones
    bounded by ``ev.later_kl``), the mean env steps per task spent before each measurement
    ``[K + 1]``, and the per-task success rates ``[K + 1, T]`` (``None`` where the family's envs
    report no success). ``progress`` hears of each of the ``K + 1`` batches; one batch is held at a
    time."""
    steps = ev.steps
    scales = step_scales(steps, ev.later_lr_scale, ev.later_lr_decay)
    show = progress or (lambda event: None)
    returns, spent, success = [], [0.0], []

    def measured(batches: int, episodes) -> None:
        returns.append(episodes.task_returns().double().cpu().numpy())
        if episodes.success is not None:
            success.append(episodes.task_success().double().cpu().numpy())
        spent.append(spent[-1] + float(episodes.mask.sum()) / len(tasks))
        show(ProgressEvent(stage, batches, steps + 1, "batch",
                           {"return": f"{returns[-1].mean():.2f}"}))

    show(ProgressEvent(stage, 0, steps + 1, "batch"))
    adaptation = adapt(setup.policy, method.rule, method.meta, tasks, setup.sampler, steps, seed,
                       setup.config.returns, scales, on_step=measured, keep=False,
                       later_kl=ev.later_kl, later_from=method.trained_steps)
    measured(steps + 1, setup.sampler.sample(tasks, adaptation.params, seed + steps))
    return (np.stack(returns), np.asarray(spent[:-1]),
            np.stack(success) if len(success) == len(returns) else None)


def load_eval(path: str | Path) -> dict:
    """Read an ``eval.json`` (a file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.is_file():
        raise ValueError(f"no eval.json at {path} (run `meta-rl evaluate` first)")
    with open(path) as f:
        return json.load(f)
