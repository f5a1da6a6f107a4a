"""Evaluation: K-step adaptation curves on held-out tasks, for the meta-learner and three baselines.

:func:`evaluate` rebuilds a run from its checkpoint, samples ``tasks`` held-out tasks, and for
every method reports the mean return over those tasks after ``0, 1, .., K`` adaptation steps, with
a 95% confidence interval across tasks. Every method is measured on the same tasks.

| method       | starting point                          | adaptation step ``k``                |
|--------------|-----------------------------------------|--------------------------------------|
| ``meta``     | the run's meta-parameters               | the run's inner rule (:func:`adapt`) |
| ``random``   | a fresh initialisation (seed ``seed``)  | the same rule and ``inner_lr``       |
| ``pretrained`` | one policy trained on pooled tasks    | the same rule, the run's ``inner_lr`` |
| ``ppo``      | an untrained SB3 PPO policy per task    | ``E * H`` more PPO env steps         |

- ``meta`` adapts with the learner's own ``adapt`` (``differentiable=False``): MAML and Reptile
  with ``inner_lr``, Meta-SGD with its learned per-parameter rates. The return after ``k`` steps
  is the mean return of the ``E`` episodes sampled with the parameters after ``k`` steps (for
  ``k < K`` those are the episodes of inner step ``k``; one more batch is sampled after step
  ``K``). Step ``k`` of every policy-gradient method uses rollout seed ``rollout_seed + k``, so
  the methods see common random numbers and the step-``k`` figures do not depend on ``K``.
  ``later_lr_scale`` multiplies the step size of steps ``2..K`` for all three (the MAML paper's
  evaluation halves it: 0.5), and ``later_lr_decay`` multiplies it again at every step after
  the second (step ``k`` uses ``later_lr_scale * later_lr_decay ** (k - 2)``). With
  ``batch_unit="steps"`` a batch is whole episodes up to ``E * H`` env steps per task (the MAML
  authors' sampler), and a task's return is the mean over however many episodes that gave.
- ``random`` is the same learner class built from ``policy.init_params(Generator().manual_seed(
  seed))``; with the default ``seed`` that is the run's own initialisation before meta-training.
  (A fresh Meta-SGD learner has every rate equal to ``inner_lr``.)
- ``pretrained`` is the MAML paper's baseline: the run's config with ``algo="maml"``,
  ``inner_steps=0`` (so the meta-step is plain multi-task policy gradient on the pooled validation
  batch, with the run's outer optimiser; TRPO for Reptile runs) and ``iterations = completed run
  iterations * (inner_steps + 1)``, which spends the same number of environment steps as
  meta-training. It is a normal run directory cached in ``RUN/pretrained/`` and reused while its
  config matches (ignoring device, threads, workers and checkpoint interval); a stale cache is
  deleted and retrained, an interrupted one resumed.
- ``ppo`` trains Stable-Baselines3 PPO from scratch on each task (``family.make_env(task)``, a
  bounded ``Box`` action space rescaled to ``[-1, 1]`` by Gymnasium's ``RescaleAction``, the
  coordinates of the meta policy's Gaussian): one
  rollout of ``E`` envs x ``H`` steps and one PPO update per stage, so after stage ``k`` it has
  used ``k * E * H`` env steps, the nominal budget of ``k`` adaptation steps. After each stage it
  is evaluated on ``E`` fresh stochastic episodes (``deterministic=False``, like the others).
  Same hidden sizes, activation and initial std as the run's policy; the run's ``gamma``; SB3's
  other defaults. It runs in this process with one torch thread, and the global ``random``,
  numpy and torch RNG states (which SB3 seeds) are restored afterwards. ``ppo_tasks`` limits it to
  the first few held-out tasks because it is the slow baseline.

Held-out tasks. Training samples iteration ``i``'s tasks with seed ``iteration_seed(config.seed,
i)``, a 31-bit word of ``SeedSequence([config.seed, i])``. Evaluation draws its seeds from a
different stream, ``SeedSequence(seed, spawn_key=(0xE7A1,))`` (its entropy ``[seed, 0, 0, 0,
0xE7A1]`` is not ``[s, i]`` for any seed ``s`` and iteration ``i < 2**96``), taking 31-bit words in
order: the first is the task seed, the second the rollout seed, the third PPO's seed. Any word
equal to a training seed of the run (iterations ``0 .. config.iterations * (inner_steps + 1) - 1``
of ``config.seed``, which covers the pretrained baseline as well) is skipped, so the held-out
tasks never come from a seed training used. (Families with finitely many tasks, such as
``HalfCheetahDir``, necessarily repeat training tasks.)

Confidence intervals: per-task mean returns ``r_1..r_n`` give ``mean(r) +/- q * std(r) /
sqrt(n)`` with ``q`` the 0.975 quantile of Student's t with ``n - 1`` degrees of freedom when
SciPy is installed, else 1.96. With one task there is no interval (NaN, ``null`` in JSON).

Everything is deterministic for a seed on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

import envs
from meta_rl.algorithms import MetaLearner, make_learner
from meta_rl.checkpoint import CHECKPOINT, load_checkpoint, load_iteration, model_dir
from meta_rl.config import RUNTIME_FIELDS, TrainConfig
from meta_rl.inner import check_lr_scale
from meta_rl.sampling import check_batch_unit
from meta_rl.trainer import (Setup, Trainer, build, check_revision, iteration_seed,
                             restore_learner, revisions)

METHODS = ("meta", "random", "pretrained", "ppo")
"""every method :func:`evaluate` knows, in report order"""
EVAL_TAG = 0xE7A1
"""spawn key that separates evaluation seeds from training's ``SeedSequence([seed, i])``"""
PRETRAINED_DIR = "pretrained"
"""sub-directory of a run that caches the pretrained baseline"""

Progress = Callable[[str], None]


@dataclass
class MethodResult:
    """One method's adaptation curve. Index ``k`` of each list is "after ``k`` steps"."""

    mean: list[float]
    """mean over tasks of the per-task mean return, ``[K + 1]``"""
    ci95: list[float]
    """half-width of the 95% confidence interval of ``mean``, ``[K + 1]``"""
    per_task: list[list[float]]
    """per-task mean return over the ``E`` episodes, ``[K + 1][n]``"""
    env_steps: list[float]
    """env steps spent adapting before the measurement, mean per task, ``[K + 1]``"""
    wall_s: float
    """wall time of the adaptation (or PPO) runs; the pretrained baseline's training time is
    ``extra["train_wall_s"]`` (0 when it came from the cache)"""
    extra: dict = field(default_factory=dict)
    """method-specific notes (pretrained: its run directory, whether it came from the cache)"""

    @property
    def num_tasks(self) -> int:
        return len(self.per_task[0]) if self.per_task else 0

    def to_dict(self) -> dict:
        return {
            "mean": self.mean, "ci95": self.ci95, "tasks": self.num_tasks,
            "wall_s": round(self.wall_s, 4), "env_steps": self.env_steps,
            "per_task": self.per_task, **self.extra,
        }


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
    """inner step size of steps after the first, relative to the first"""
    later_lr_decay: float = 1.0
    """factor applied to the step size at every step after the second"""
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
            "batch_unit": self.batch_unit,
            "env_revision": self.env_revision,
            "trained_env_revision": self.trained_env_revision,
            "task_list": [t.to_json() for t in self.tasks],
        }


# -- checks ---------------------------------------------------------------------------------------


def _count(value, name: str, minimum: int, hint: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({hint})")
    return value


def check_methods(methods: Iterable[str] | str) -> tuple[str, ...]:
    """Validate method names (a list, or a comma-separated string); returns them in report order."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(
            f"unknown evaluation method(s) {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(METHODS)}"
        )
    if not methods:
        raise ValueError(f"no evaluation method given; choose from {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods)


# -- seeds and held-out tasks ---------------------------------------------------------------------


def training_seeds(config: TrainConfig) -> set[int]:
    """Task seeds of the run's iterations and of its pretrained baseline's (a superset)."""
    n = config.iterations * (config.inner_steps + 1)
    return {iteration_seed(config.seed, i) for i in range(n)}


def eval_seeds(seed: int, reserved: set[int], count: int = 3) -> list[int]:
    """The first ``count`` 31-bit words of the evaluation stream of ``seed`` not in ``reserved``."""
    words = 2 * count
    while True:
        state = np.random.SeedSequence(seed, spawn_key=(EVAL_TAG,)).generate_state(words)
        seeds = [int(w >> 1) for w in state if int(w >> 1) not in reserved]
        if len(seeds) >= count:
            return seeds[:count]
        words *= 2


# -- statistics -----------------------------------------------------------------------------------


def _t_quantile():
    try:
        from scipy.stats import t
    except ImportError:
        return None
    return t


def ci_method() -> str:
    return "student-t" if _t_quantile() is not None else "normal"


def mean_ci95(values) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its 95% confidence interval (see module doc)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(x.mean())
    if x.size < 2:  # one task: no interval (written as null, shown without one)
        return mean, float("nan")
    t = _t_quantile()
    q = float(t.ppf(0.975, x.size - 1)) if t is not None else 1.96
    return mean, float(q * x.std(ddof=1) / math.sqrt(x.size))


def summarize(per_task: np.ndarray, env_steps, wall_s: float, **extra) -> MethodResult:
    """A :class:`MethodResult` from per-task returns ``[K + 1, n]``."""
    stats = [mean_ci95(row) for row in per_task]
    return MethodResult(
        mean=[m for m, _ in stats], ci95=[c for _, c in stats],
        per_task=[[float(v) for v in row] for row in per_task],
        env_steps=[float(s) for s in env_steps], wall_s=wall_s, extra=extra,
    )


# -- policy-gradient adaptation (meta, random, pretrained) ----------------------------------------


def adaptation_curve(learner: MetaLearner, tasks: list, seed: int, steps: int,
                     later_lr_scale: float = 1.0, later_lr_decay: float = 1.0):
    """Per-task mean returns ``[K + 1, T]`` after ``0..K`` steps of ``learner.adapt`` (step sizes
    after the first as :func:`~meta_rl.inner.step_scales` gives them), and the mean env steps per
    task spent before each measurement ``[K + 1]``."""
    adaptation = learner.adapt(tasks, seed, steps=steps, differentiable=False,
                               later_lr_scale=later_lr_scale, later_lr_decay=later_lr_decay)
    final = learner.sampler.sample(tasks, adaptation.params, seed + steps)
    batches = [*adaptation.episodes, final]
    returns = torch.stack([ep.task_returns() for ep in batches]).double().cpu().numpy()
    per_batch = [float(ep.mask.sum()) / len(tasks) for ep in batches]
    spent = np.concatenate([[0.0], np.cumsum(per_batch[:-1])])
    return returns, spent


# -- the pretrained baseline ----------------------------------------------------------------------


def pretrained_config(config: TrainConfig, iterations: int) -> TrainConfig:
    """The multi-task baseline's config: ``algo=maml, inner_steps=0``, ``iterations * (K + 1)``
    iterations (the same env steps as ``iterations`` meta-iterations of ``config``)."""
    keep_outer = config.outer_name in ("trpo", "adam")
    return TrainConfig.from_dict(
        {
            "algo": "maml",
            "inner_steps": 0,
            "first_order": False,
            "iterations": iterations * (config.inner_steps + 1),
            "keep_every": 0,
            "outer": config.outer_name if keep_outer else None,
            "outer_lr": config.outer_lr if keep_outer else None,
            "rate_lr": None,  # MAML has no learned rates
        },
        base=config,
    )


def _comparable(config_dict: dict) -> dict:
    d = TrainConfig.from_dict(config_dict).to_dict()
    return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}


def pretrained_params(run_dir: Path, config: TrainConfig, progress: Progress | None = None):
    """Train (or load from ``run_dir/pretrained``) the baseline for ``config``.

    Returns ``(params, info)``: the meta-parameter dict and ``{"dir", "cached", "train_wall_s"}``.
    """
    out = Path(run_dir) / PRETRAINED_DIR
    say = progress or (lambda msg: None)
    state = None
    if (out / CHECKPOINT).is_file():
        try:
            state = load_checkpoint(out)
            if _comparable(state["config"]) != _comparable(config.to_dict()):
                say(f"pretrained: cached config in {out} differs from this run's; retraining")
                state = None
            else:
                check_revision(state, out / CHECKPOINT)
        except (ValueError, KeyError, TypeError) as exc:  # another revision of the family, too
            say(f"pretrained: cache in {out} is unusable ({exc}); retraining")
            state = None
    if state is not None and state["iteration"] >= config.iterations:
        say(f"pretrained: reusing {out} ({state['iteration']} iterations)")
        return state["learner"]["params"], {"dir": str(out), "cached": True, "train_wall_s": 0.0}

    def report(record: dict) -> None:
        say(f"pretrained: iteration {record['iteration']}/{config.iterations} "
            f"return {record['post_adapt_return']:.2f}")

    start = time.perf_counter()
    if state is not None:
        say(f"pretrained: resuming {out} from iteration {state['iteration']}")
        trainer = Trainer.resume(out, callbacks=[report], iterations=config.iterations)
    else:
        if out.exists():
            shutil.rmtree(out)
        say(f"pretrained: training {config.iterations} iterations in {out}")
        trainer = Trainer(config, out, callbacks=[report])
    try:
        trainer.train()
    finally:
        trainer.close()
    wall = time.perf_counter() - start
    state = load_checkpoint(out)
    return state["learner"]["params"], {"dir": str(out), "cached": False, "train_wall_s": wall}


# -- the PPO baseline -----------------------------------------------------------------------------


@contextlib.contextmanager
def preserved_globals(threads: int | None = None):
    """Restore the global ``random``, numpy and torch (CPU) RNG states and torch's thread count
    on exit; with ``threads``, run with that many torch threads meanwhile."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def _ppo_returns(model, env, episodes: int, seed: int) -> float:
    """Mean return of the first episode of each of ``env``'s ``E`` sub-envs (stochastic actions)."""
    env.seed(seed)
    obs = env.reset()
    total = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    while alive.any():
        action, _ = model.predict(obs, deterministic=False)
        obs, reward, done, _ = env.step(action)
        total += np.where(alive, reward, 0.0)
        alive &= ~done
    return float(total.mean())


def _ppo_env(family: envs.TaskFamily, task):
    """``family``'s env for ``task``, its bounded ``Box`` actions rescaled to ``[-1, 1]`` (the
    coordinates the meta policy's Gaussian uses, so ``init_std`` means the same for PPO)."""
    import gymnasium as gym

    env = family.make_env(task)
    space = env.action_space
    if (isinstance(space, gym.spaces.Box) and np.all(np.isfinite(space.low))
            and np.all(np.isfinite(space.high))
            and not (np.all(space.low == -1) and np.all(space.high == 1))):
        one = np.ones(space.shape, space.dtype)
        env = gym.wrappers.RescaleAction(env, -one, one)
    return env


def ppo_curve(family: envs.TaskFamily, tasks: list, config: TrainConfig, steps: int,
              episodes: int, seed: int, progress: Progress | None = None):
    """Per-task mean returns ``[K + 1, n]`` of PPO trained from scratch on each task for ``k``
    stages of ``episodes * horizon`` env steps, and the env steps spent per task ``[K + 1]``."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    horizon = family.horizon
    batch = episodes * horizon
    activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[config.activation]
    policy_kwargs = {
        "net_arch": {"pi": list(config.hidden), "vf": list(config.hidden)},
        "activation_fn": activation,
        "log_std_init": math.log(config.init_std),
    }
    # minibatches of one horizon's worth of steps (E minibatches per epoch); SB3 needs >= 2
    batch_size = horizon if horizon >= 2 and episodes >= 2 else max(batch, 2)
    returns = np.zeros((steps + 1, len(tasks)))
    with preserved_globals(threads=1):
        for j, task in enumerate(tasks):
            task_seed = (seed + j) % 2**31
            make = [lambda task=task: _ppo_env(family, task)] * episodes
            train_env, eval_env = DummyVecEnv(make), DummyVecEnv(make)
            try:
                model = PPO(
                    "MlpPolicy", train_env, n_steps=horizon, batch_size=batch_size,
                    gamma=config.gamma, policy_kwargs=policy_kwargs, seed=task_seed,
                    device="cpu", verbose=0,
                )
                for k in range(steps + 1):
                    if k > 0:
                        model.learn(batch, reset_num_timesteps=False)
                    returns[k, j] = _ppo_returns(model, eval_env, episodes, task_seed + 1)
            finally:
                train_env.close()
                eval_env.close()
            if progress is not None:
                progress(f"ppo: task {j + 1}/{len(tasks)} return {returns[-1, j]:.2f}")
    return returns, np.arange(steps + 1, dtype=np.float64) * batch


# -- evaluate -------------------------------------------------------------------------------------


def evaluate(
    run_dir: str | Path,
    tasks: int = 40,
    steps: int = 3,
    episodes: int = 20,
    seed: int | None = None,
    methods: Iterable[str] | str = METHODS,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    ppo_tasks: int | None = None,
    later_lr_scale: float = 1.0,
    batch_unit: str | None = None,
    later_lr_decay: float = 1.0,
    iteration: int | None = None,
) -> EvalResult:
    """Adaptation curves of the run in ``run_dir`` and the baselines on held-out tasks.

    ``tasks`` held-out tasks, ``steps`` adaptation steps (K), ``episodes`` episodes per task for
    every adaptation step and measurement (E), ``seed`` the evaluation seed (default: the run's),
    ``methods`` any of :data:`METHODS`, ``device`` for the policy-gradient methods (default: the
    run's), ``progress`` receives one-line status messages, ``ppo_tasks`` runs PPO on only the
    first that many held-out tasks (default all; capped at ``tasks``), ``later_lr_scale``
    multiplies the inner step size of every step after the first for the policy-gradient methods
    (1 keeps it; the MAML paper's evaluation halves it, 0.5), ``later_lr_decay`` multiplies it
    again at each step after the second (1 keeps it), ``batch_unit`` says whether
    ``episodes`` counts episodes or env steps (``E * H`` per task; default: the run's),
    ``iteration`` evaluates the model the run kept after that many meta-iterations (its
    ``keep_every`` snapshots; default: the latest checkpoint); a snapshot's pretrained baseline
    is cached beside it, in :func:`~meta_rl.checkpoint.model_dir`.
    """
    tasks = _count(tasks, "tasks", 1, "the number of held-out tasks, e.g. 40")
    steps = _count(steps, "steps", 0, "adaptation steps K, e.g. 3")
    episodes = _count(episodes, "episodes", 1, "episodes per task, e.g. 20")
    methods = check_methods(methods)
    later_lr_scale = check_lr_scale(later_lr_scale)
    later_lr_decay = check_lr_scale(later_lr_decay, "later_lr_decay")
    if batch_unit is not None:
        check_batch_unit(batch_unit)
    if ppo_tasks is not None:
        ppo_tasks = min(_count(ppo_tasks, "ppo_tasks", 1, "or None for every task"), tasks)
    run_dir = Path(run_dir)
    state, checkpoint = load_iteration(run_dir, iteration)
    config = TrainConfig.from_dict(state["config"])
    seed = config.seed if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(
            f"seed must be an integer >= 0, got {seed!r} (or leave it out for the run's seed)"
        )
    overrides = {"episodes": episodes}
    if device is not None:
        overrides["device"] = str(device)
    if batch_unit is not None:
        overrides["batch_unit"] = batch_unit
    if "pretrained" in methods and state["iteration"] < 1:
        raise ValueError(
            f"the run in {run_dir} has no completed iteration, so the pretrained baseline has no "
            "budget; train it first or leave out 'pretrained'"
        )
    eval_config = TrainConfig.from_dict(overrides, base=config)
    task_seed, rollout_seed, ppo_seed = eval_seeds(seed, training_seeds(config))
    say = progress or (lambda msg: None)
    trained_revision, revision = revisions(state)
    if trained_revision != revision:  # allowed (e.g. to measure transfer), but never silently
        message = (f"{checkpoint} was trained on {config.env} revision {trained_revision}, and "
                   f"this version's tasks are revision {revision} (the family's docstring says "
                   "what changed); its returns are measured on tasks it was not trained on")
        if progress is None:
            warnings.warn(message, stacklevel=2)
        say(f"warning: {message}")

    # build() draws nn.Linear's default init from torch's global RNG, and SB3 seeds the global
    # RNGs: evaluation leaves them (and the thread count) as it found them.
    with preserved_globals():
        setup = build(eval_config, eval_config.resolved_device())
        try:
            restore_learner(setup.learner, state, checkpoint)
            held_out = setup.family.sample_tasks(tasks, seed=task_seed)
            results: dict[str, MethodResult] = {}
            for name in methods:
                say(f"{name}: {tasks if name != 'ppo' else len(held_out[:ppo_tasks])} tasks, "
                    f"{steps} steps")
                if name == "ppo":
                    start = time.perf_counter()
                    returns, spent = ppo_curve(setup.family, held_out[:ppo_tasks], config, steps,
                                               episodes, ppo_seed, progress)
                    results[name] = summarize(returns, spent, time.perf_counter() - start,
                                              seed=ppo_seed)
                else:
                    learner, extra = _policy_gradient_learner(
                        name, setup, state, eval_config, seed, model_dir(run_dir, checkpoint),
                        progress)
                    start = time.perf_counter()
                    returns, spent = adaptation_curve(learner, held_out, rollout_seed, steps,
                                                      later_lr_scale, later_lr_decay)
                    results[name] = summarize(returns, spent, time.perf_counter() - start,
                                              **extra)
                say(f"{name}: step {steps} return {results[name].mean[-1]:.2f} "
                    f"({results[name].wall_s:.1f}s)")
        finally:
            setup.close()

    return EvalResult(
        run=str(run_dir), family=setup.family.name, algo=config.algo, seed=seed, steps=steps,
        episodes=episodes, horizon=setup.family.horizon, tasks=held_out, task_seed=task_seed,
        rollout_seed=rollout_seed, methods=results, ci_method=ci_method(),
        later_lr_scale=later_lr_scale, later_lr_decay=later_lr_decay,
        batch_unit=eval_config.batch_unit, iteration=int(state["iteration"]),
        checkpoint=str(checkpoint), env_revision=revision, trained_env_revision=trained_revision,
    )


def _policy_gradient_learner(name: str, setup: Setup, state: dict, eval_config: TrainConfig,
                             seed: int, home: Path, progress: Progress | None):
    """The learner whose ``adapt`` gives method ``name``'s curve, and notes for the record
    (``home``: the evaluated model's folder, where the pretrained baseline is cached)."""
    if name == "meta":
        return setup.learner, {"iteration": int(state["iteration"])}
    if name == "random":
        init = setup.policy.init_params(torch.Generator().manual_seed(seed))
        params = {k: v.to(setup.device) for k, v in init.items()}
        learner = make_learner(eval_config.algo, setup.policy, setup.sampler,
                               eval_config.algo_config, params)
        return learner, {"init_seed": seed}
    # pretrained: the run's config made multi-task, trained on the evaluation's device
    pre_config = pretrained_config(TrainConfig.from_dict(state["config"]), int(state["iteration"]))
    pre_config = TrainConfig.from_dict({"device": eval_config.device}, base=pre_config)
    params, info = pretrained_params(home, pre_config, progress)
    algo_config = TrainConfig.from_dict({"episodes": eval_config.episodes},
                                        base=pre_config).algo_config
    params = {k: v.to(setup.device) for k, v in params.items()}
    learner = make_learner("maml", setup.policy, setup.sampler, algo_config, params)
    return learner, {"iterations": pre_config.iterations, **info}


def load_eval(path: str | Path) -> dict:
    """Read an ``eval.json`` (a file or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.is_file():
        raise ValueError(f"no eval.json at {path} (run `meta-rl evaluate` first)")
    with open(path) as f:
        return json.load(f)

