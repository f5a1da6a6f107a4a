"""The baselines that fast adaptation is measured against, on the same held-out tasks.

| method       | starting point                          | adaptation step ``k``                   |
|--------------|-----------------------------------------|-----------------------------------------|
| ``random``   | a fresh initialisation (seed ``seed``)  | the run's inner rule and step size      |
| ``pretrained`` | one policy trained on pooled tasks    | plain policy-gradient steps at ``inner_lr`` |
| ``ppo``      | an untrained SB3 PPO policy per task    | ``E * H`` more PPO env steps            |

- ``random`` starts from ``policy.init_params(Generator().manual_seed(seed))``; with the default
  evaluation seed that is the run's own initialisation before meta-training. (A fresh Meta-SGD
  rule has every rate equal to ``inner_lr``.)
- ``pretrained`` is the MAML paper's baseline: the run's config with ``algo="maml"``,
  ``inner_steps=0`` (so the meta-step is plain multi-task policy gradient on the pooled
  validation batch, with the run's outer optimiser; TRPO for Reptile runs) and
  ``iterations = completed run iterations * (inner_steps + 1)``, which spends the same number
  of environment steps as meta-training. It is a normal run directory cached in
  ``<model folder>/pretrained/`` and reused while its experiment matches (a stale cache is
  deleted and retrained, an interrupted one resumed).
- ``ppo`` trains Stable-Baselines3 PPO from scratch on each task (``family.make_env(task)``, a
  bounded ``Box`` action space rescaled to ``[-1, 1]`` by Gymnasium's ``RescaleAction``, the
  coordinates of the meta policy's Gaussian): one rollout of ``E`` envs x ``H`` steps and one PPO
  update per stage, so after stage ``k`` it has used ``k * E * H`` env steps, the nominal budget
  of ``k`` adaptation steps. After each stage it is evaluated on ``E`` fresh stochastic episodes.
  Same hidden sizes, activation and initial std as the run's policy; the run's ``gamma``; SB3's
  other defaults. It runs in this process with one torch thread, and the global ``random``,
  numpy and torch RNG states (which SB3 seeds) are restored afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import envs
from envs.base import reported_success
from meta_rl.checkpoint import CHECKPOINT, atomic_write, load_checkpoint
from meta_rl.config import EvalConfig, TrainConfig
from meta_rl.inner import FixedStep, InnerRule
from meta_rl.policies import Params
from meta_rl.progress import ProgressCallback, ProgressEvent
from meta_rl.seeding import eval_seeds
from meta_rl.trainer import Setup, Trainer, check_revision

PRETRAINED_DIR = "pretrained"
"""sub-directory of a model's folder that caches its pretrained baseline"""
BASELINE_STEPS = "baselines.json"
"""file of a model's folder that caches the baselines' chosen step sizes"""


@dataclass(frozen=True)
class Method:
    """How a policy-gradient method adapts: its inner rule from its starting ``meta``, the first
    ``trained_steps`` steps plain (later ones bounded by the evaluation's ``later_kl``), and
    notes for the record."""

    rule: InnerRule
    meta: Params
    trained_steps: int
    extra: dict = field(default_factory=dict)


def random_init(setup: Setup, seed: int) -> tuple[Params, dict]:
    """A fresh initialisation drawn with ``seed``, on the evaluation's device."""
    init = setup.policy.init_params(torch.Generator().manual_seed(seed))
    return {k: v.to(setup.device) for k, v in init.items()}, {"init_seed": seed}


def pretrained(setup: Setup, config: TrainConfig, iterations: int, home: Path,
               progress: ProgressCallback | None = None) -> tuple[Params, dict]:
    """The multi-task policy for the run ``config`` after ``iterations`` meta-iterations
    (trained, or read from ``home``'s cache, on the evaluation's device)."""
    pre = pretrained_config(config, iterations).replace(device=setup.config.run.device)
    params, info = pretrained_params(home, pre, progress)
    params = {k: v.to(setup.device) for k, v in params.items()}
    return params, {"iterations": pre.iterations, **info}


def choose_step_size(name: str, meta: Params, home: Path, ev: EvalConfig, inner_lr: float,
                     seed: int, curve: Callable, sample_tasks: Callable, reserved: set[int],
                     progress: ProgressCallback | None = None) -> tuple[float, dict]:
    """Baseline ``name``'s step size: the best of ``ev.baseline_lrs`` times ``inner_lr`` by the
    mean return over steps 1..K on ``ev.validation_tasks`` validation tasks, and a record of the
    choice. ``curve(rule, meta, tasks, rollout_seed)`` gives per-task returns ``[K + 1, n]``.
    The choice is cached in ``home/baselines.json`` for the same protocol."""
    show = progress or (lambda event: None)
    grid = [inner_lr * f for f in ev.baseline_lrs]
    key = json.dumps({"method": name, "seed": seed, "grid": grid, "tasks": ev.validation_tasks,
                      "steps": ev.steps, "episodes": ev.episodes, "batch_unit": ev.batch_unit,
                      "later_lr_scale": ev.later_lr_scale, "later_lr_decay": ev.later_lr_decay,
                      "later_kl": ev.later_kl}, sort_keys=True)
    path = Path(home) / BASELINE_STEPS
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key in cache:
        return cache[key]["inner_lr"], cache[key]
    if ev.steps == 0:  # nothing to choose: no step is taken
        return inner_lr, {"chosen_on": "no step"}
    # the 4th and 5th words of the evaluation seed stream: other tasks than the reported ones
    task_seed, rollout_seed = eval_seeds(seed, reserved, count=5)[3:]
    tasks = sample_tasks(ev.validation_tasks, task_seed)
    scores = {}
    for k, lr in enumerate(grid):
        show(ProgressEvent(f"{name}: choosing its step size", k, len(grid), "step size"))
        returns = curve(FixedStep(lr), meta, tasks, rollout_seed)
        scores[lr] = float(np.mean(returns[1:].mean(1)))
    show(ProgressEvent(f"{name}: choosing its step size", len(grid), len(grid), "step size"))
    best = max(scores, key=scores.get)
    record = {"inner_lr": best, "chosen_on": f"{len(tasks)} validation tasks (seed {task_seed})",
              "validation_score": {str(lr): v for lr, v in scores.items()}}
    cache[key] = record
    data = (json.dumps(cache, indent=1) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))
    return best, record


def pretrained_config(config: TrainConfig, iterations: int) -> TrainConfig:
    """The multi-task baseline's config: ``algo=maml, inner_steps=0``, ``iterations * (K + 1)``
    iterations (the same env steps as ``iterations`` meta-iterations of ``config``)."""
    keep_outer = config.outer_name in ("trpo", "adam")
    return config.replace(
        algo="maml", inner_steps=0, first_order=False,
        iterations=iterations * (config.inner.inner_steps + 1), keep_every=0,
        outer=config.outer_name if keep_outer else None,
        outer_lr=config.optim.outer_lr if keep_outer else None,
        rate_lr=None,  # MAML has no learned rates
    )


def pretrained_params(model_home: Path, config: TrainConfig,
                      progress: ProgressCallback | None = None) -> tuple[Params, dict]:
    """Train (or load from ``model_home/pretrained``) the baseline for ``config``; its training
    shows as the stage ``pretrained: training``.

    Returns ``(params, info)``: the policy's parameters and ``{"dir", "cached",
    "train_wall_s"}``.
    """
    out = Path(model_home) / PRETRAINED_DIR
    show = progress or (lambda event: None)

    def say(text: str) -> None:
        show(ProgressEvent("pretrained", note=f"pretrained: {text}"))

    state = None
    if (out / CHECKPOINT).is_file():
        try:
            state = load_checkpoint(out)
            if TrainConfig.from_dict(state["config"]).experiment() != config.experiment():
                say(f"cached config in {out} differs from this run's; retraining")
                state = None
            else:
                check_revision(state, out / CHECKPOINT)
        except (ValueError, KeyError, TypeError) as exc:  # another revision of the family, too
            say(f"cache in {out} is unusable ({exc}); retraining")
            state = None
    if state is not None and state["iteration"] >= config.iterations:
        say(f"reusing {out} ({state['iteration']} iterations)")
        return state["learner"]["meta"], {"dir": str(out), "cached": True, "train_wall_s": 0.0}

    start = time.perf_counter()
    stage = {"progress": show, "stage": "pretrained: training"}
    if state is not None:
        say(f"resuming {out} from iteration {state['iteration']}")
        trainer = Trainer.resume(out, iterations=config.iterations, **stage)
    else:
        if out.exists():
            shutil.rmtree(out)
        say(f"training {config.iterations} iterations in {out} (cached for later evaluations)")
        trainer = Trainer(config, out, **stage)
    try:
        trainer.train()
    finally:
        trainer.close()
    wall = time.perf_counter() - start
    state = load_checkpoint(out)
    return state["learner"]["meta"], {"dir": str(out), "cached": False, "train_wall_s": wall}


# -- PPO -------------------------------------------------------------------------------------------


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


def _ppo_returns(model, env, episodes: int, seed: int) -> tuple[float, float | None]:
    """Mean return of the first episode of each of ``env``'s ``E`` sub-envs (stochastic actions),
    and the fraction of them that succeeded (``None`` where the env reports no success)."""
    env.seed(seed)
    obs = env.reset()
    total = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    success = np.zeros(episodes, dtype=bool)
    reported = True
    while alive.any():
        action, _ = model.predict(obs, deterministic=False)
        obs, reward, done, infos = env.step(action)
        total += np.where(alive, reward, 0.0)
        now = reported_success(infos)
        reported = reported and now is not None
        if reported:
            success |= alive & now
        alive &= ~done
    return float(total.mean()), (float(success.mean()) if reported else None)


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
              episodes: int, seed: int, progress: ProgressCallback | None = None):
    """Per-task mean returns ``[K + 1, n]`` of PPO trained from scratch on each task for ``k``
    stages of ``episodes * horizon`` env steps, the env steps spent per task ``[K + 1]``, and
    the per-task success rates ``[K + 1, n]`` (``None`` where the env reports no success)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    horizon = family.horizon
    batch = episodes * horizon
    activation = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[config.policy.activation]
    policy_kwargs = {
        "net_arch": {"pi": list(config.policy.hidden), "vf": list(config.policy.hidden)},
        "activation_fn": activation,
        "log_std_init": math.log(config.policy.init_std),
    }
    # minibatches of one horizon's worth of steps (E minibatches per epoch); SB3 needs >= 2
    batch_size = horizon if horizon >= 2 and episodes >= 2 else max(batch, 2)
    returns = np.zeros((steps + 1, len(tasks)))
    success = np.zeros((steps + 1, len(tasks)))
    reported = True
    show = progress or (lambda event: None)
    show(ProgressEvent("ppo", 0, len(tasks), "task"))
    with preserved_globals(threads=1):
        for j, task in enumerate(tasks):
            task_seed = (seed + j) % 2**31
            make = [lambda task=task: _ppo_env(family, task)] * episodes
            train_env, eval_env = DummyVecEnv(make), DummyVecEnv(make)
            try:
                model = PPO(
                    "MlpPolicy", train_env, n_steps=horizon, batch_size=batch_size,
                    gamma=config.returns.gamma, policy_kwargs=policy_kwargs, seed=task_seed,
                    device="cpu", verbose=0,
                )
                for k in range(steps + 1):
                    if k > 0:
                        model.learn(batch, reset_num_timesteps=False)
                    returns[k, j], rate = _ppo_returns(model, eval_env, episodes, task_seed + 1)
                    reported = reported and rate is not None
                    success[k, j] = rate if rate is not None else 0.0
            finally:
                train_env.close()
                eval_env.close()
            show(ProgressEvent("ppo", j + 1, len(tasks), "task",
                               {"return": f"{returns[-1, :j + 1].mean():.2f}"}))
    return (returns, np.arange(steps + 1, dtype=np.float64) * batch,
            success if reported else None)
