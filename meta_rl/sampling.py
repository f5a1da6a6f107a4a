"""Collect ``E`` episodes for each of ``T`` tasks, each task with its own policy parameters.

Two samplers share one interface, ``sampler.sample(tasks, params, seed) -> Episodes``:

- :class:`BatchedSampler` for families with ``make_batched``: all ``T x E`` envs and the policy
  live on one device; a rollout is ``H`` iterations of (one batched policy forward, one env
  step), with no Python loop over tasks or envs and no host synchronisation.
- :class:`VectorSampler` for every other family (MuJoCo, users' own): a
  :class:`~meta_rl.vector.TaskVectorEnv` steps ``T x E`` Gymnasium envs, each with its own task,
  in slices (one in the main process, the others in worker processes), while the policy runs
  batched in the main process, on one torch thread.

``params`` carry a leading task dimension ``[T, ...]`` (see :func:`meta_rl.policies.batch_params`).
Sampling never builds an autograd graph.

A batch is counted in one of two units (``batch_unit``):

- ``"episodes"``: exactly ``E`` episodes per task.
- ``"steps"``: whole episodes until each task has at least ``E x horizon`` env steps, so episodes
  that end early make room for more. This is how rllab, the MAML authors' code, counts a batch
  (``batch_size`` in env steps). Episodes are drawn in rounds; a task's batch keeps its episodes
  in order until the budget is reached, and tasks with fewer episodes than the longest batch are
  padded with rows whose ``mask`` is 0 (see :attr:`Episodes.valid`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from envs import TaskFamily
from meta_rl.config import SamplingConfig
from meta_rl.distributed import SINGLE, Shard
from meta_rl.episodes import Episodes
from meta_rl.errors import EnvError
from meta_rl.policies import Params, Policy

#: rounds a ``"steps"`` batch may take before the sampler gives up. After the first, a round draws
#: enough episodes, at the mean length so far, to fill the largest remaining budget, so a batch
#: needs few. Memory grows with the episodes a task needs: ``E x horizon`` one-step episodes
#: would be ``E x horizon`` padded rows.
MAX_ROUNDS = 64


class Sampler:
    """Interface: ``sample(tasks, params, seed)`` collects a batch of ``episodes_per_task``
    episodes per task, counted in ``batch_unit`` (see the module docstring).

    ``rows=(offset, total)`` says that ``tasks`` are rows ``offset..offset + len(tasks)`` of a
    batch of ``total`` tasks (one rank's slice, ``meta_rl.distributed``): their episodes are then
    the ones the whole batch gives those rows (envs seeded as its sub-envs, action noise drawn
    as its rows), and a ``"steps"`` batch agrees with the other ranks (``shard``) on every
    round. Subclasses implement :meth:`collect`: exactly ``episodes`` episodes for each task.
    """

    family: TaskFamily
    episodes_per_task: int
    batch_unit: str = "episodes"
    device: torch.device
    shard: Shard = SINGLE

    def collect(self, tasks: list, params: Params, seed: int, episodes: int,
                rows: tuple[int, int] | None = None) -> Episodes:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, tasks: list, params: Params, seed: int,
               rows: tuple[int, int] | None = None) -> Episodes:
        _check_params(params, len(tasks))
        if self.batch_unit == "episodes":
            episodes = self.collect(tasks, params, seed, self.episodes_per_task, rows)
        else:
            episodes = self._sample_steps(tasks, params, seed, rows or (0, len(tasks)))
        self._check_finite(episodes, tasks, seed)
        return episodes

    def _check_finite(self, episodes: Episodes, tasks: list, seed: int) -> None:
        """An :class:`EnvError` naming the family, the task and the step if the env returned a
        non-finite observation or reward in a step that happened (one host sync per batch)."""
        happened = episodes.mask > 0
        bad_obs = ~torch.isfinite(episodes.obs).all(-1) & happened
        bad = bad_obs | (~torch.isfinite(episodes.rewards) & happened)
        if not bool(bad.any()):
            return
        t, e, h = (int(i) for i in bad.nonzero()[0])
        what = (f"observation after {h} steps" if bool(bad_obs[t, e, h])
                else f"reward at step {h + 1}")
        raise EnvError(f"{self.family.name} returned a non-finite {what} of an episode of task "
                       f"{tasks[t]!r} (sampling seed {seed}); the env is at fault, not the "
                       "learning: check the family's dynamics and reward")

    def _sample_steps(self, tasks: list, params: Params, seed: int,
                      rows: tuple[int, int]) -> Episodes:
        num_tasks, per_round = len(tasks), self.episodes_per_task
        budget = per_round * self.family.horizon
        kept_steps = np.zeros(num_tasks, dtype=np.int64)  # env steps kept per task so far
        kept_eps = np.zeros(num_tasks, dtype=np.int64)
        seen_steps = np.zeros(num_tasks, dtype=np.int64)  # all steps drawn (for the mean length)
        seen_eps = np.zeros(num_tasks, dtype=np.int64)
        rounds = []  # (task indices, episodes, keep [n, E_r], row of each episode in its task)
        todo = np.arange(num_tasks)
        for r in range(MAX_ROUNDS):
            if todo.size:  # (a rank whose tasks are all done still takes part in the round)
                sub_tasks = [tasks[i] for i in todo]
                index = torch.as_tensor(todo)
                sub_params = {k: v.index_select(0, index.to(v.device)) for k, v in params.items()}
                ep = self.collect(sub_tasks, sub_params, round_seed(seed, r), per_round, rows)
                lengths = ep.lengths.round().long().cpu().numpy()  # [n, E_r]
                before = kept_steps[todo, None] + np.cumsum(lengths, 1) - lengths
                keep = before < budget  # a prefix of each row: whole episodes until the budget
                kept_rows = kept_eps[todo, None] + np.cumsum(keep, 1) - 1
                rounds.append((todo, ep, keep, kept_rows))
                kept_steps[todo] += (lengths * keep).sum(1)
                kept_eps[todo] += keep.sum(1)
                seen_steps[todo] += lengths.sum(1)
                seen_eps[todo] += lengths.shape[1]
            todo = np.flatnonzero(kept_steps < budget)
            counts = [len(t) for t in self.shard.all_gather_vector(todo)]  # short tasks per rank
            if not sum(counts):
                break
            need = 0.0
            if todo.size:
                mean_len = seen_steps[todo] / seen_eps[todo]
                need = np.ceil((budget - kept_steps[todo]) / np.maximum(mean_len, 1.0)).max()
            if self.shard.distributed:
                need = float(self.shard.all_reduce(torch.tensor(float(need), dtype=torch.float64),
                                                   "max"))
            per_round = int(min(max(need, 1), budget))
            rows = (sum(counts[: self.shard.rank]), sum(counts))
        else:
            raise RuntimeError(
                f"{self.family.name}: {MAX_ROUNDS} rounds of episodes did not reach {budget} env "
                "steps per task; use batch_unit 'episodes'"
            )
        if len(rounds) == 1 and rounds[0][2].all():
            return rounds[0][1]  # one round, every episode kept: already the batch
        return _assemble(rounds, num_tasks, int(kept_eps.max()))

    def close(self) -> None:
        pass


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux's MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(family: TaskFamily, num_tasks: int, episodes: int, batches: int,
                 hidden: tuple[int, ...], batch_unit: str, what: str) -> None:
    """Refuse, with an estimate, a job whose ``batches`` batches of ``num_tasks`` x ``episodes``
    episodes (and the policy's activations on them) cannot fit in the memory available.

    The estimate is rough (4 bytes per number: observations, actions, rewards, flags, and three
    copies of every hidden layer for the backward pass; twice that for ``"steps"`` batches,
    which pad tasks to the fullest), but absurd sizes are out by orders of magnitude.
    """
    available = available_memory()
    if available is None:
        return
    obs = int(np.prod(family.observation_space.shape))
    act = int(np.prod(family.action_space.shape or (1,)))
    per_step = 4 * (obs + act + 6 + 3 * sum(hidden))
    need = num_tasks * episodes * family.horizon * per_step * batches * (
        2 if batch_unit == "steps" else 1)
    if need > available:
        raise ValueError(
            f"{what} would need about {need / 2**30:,.1f} GiB ({batches} batch"
            f"{'es' if batches > 1 else ''} of {num_tasks:,} tasks x {episodes:,} episodes x "
            f"{family.horizon} steps), and {available / 2**30:,.1f} GiB is available; use fewer "
            "tasks or episodes")


def round_seed(seed: int, r: int) -> int:
    """The seed of round ``r`` of a ``"steps"`` batch (round 0 uses ``seed`` itself)."""
    if r == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0] >> 1)


def _assemble(rounds: list, num_tasks: int, width: int) -> Episodes:
    """Scatter the kept episodes of every round into ``[T, width, ...]`` rows, padding with
    masked rows."""
    first = rounds[0][1]
    out = [None if x is None else x.new_zeros((num_tasks, width, *x.shape[2:])) for x in first]
    for todo, ep, keep, rows in rounds:
        sub, col = np.nonzero(keep)
        src = (torch.as_tensor(sub, device=first.obs.device),
               torch.as_tensor(col, device=first.obs.device))
        dst = (torch.as_tensor(todo[sub], device=first.obs.device),
               torch.as_tensor(rows[sub, col], device=first.obs.device))
        for o, x in zip(out, ep):
            if o is not None:
                o[dst] = x[src]
    return Episodes(*out)


def _check_params(params: Params, num_tasks: int) -> None:
    for name, p in params.items():
        if p.dim() == 0 or p.shape[0] != num_tasks:
            raise ValueError(
                f"sampler needs per-task parameters with leading dim T={num_tasks}; "
                f"{name} has shape {list(p.shape)} (use meta_rl.policies.batch_params)"
            )


def rollout(env, policy: Policy, params: Params, seed: int, stop_early: bool = False,
            rows: tuple[int, int] | None = None) -> Episodes:
    """Run one episode in each of the ``T x E`` copies of ``env`` (``reset``/``step`` on tensors).

    With ``stop_early`` the loop ends once every copy is done (a host sync per step, worth it
    only when each step is costly, as with worker processes). ``rows=(offset, total)``: the
    ``T`` tasks are rows ``offset..`` of a batch of ``total``; copy ``(t, e)`` is reset with the
    seed the whole batch gives copy ``(offset + t, e)``, and the action noise is the whole
    batch's rows.
    """
    first = next(iter(params.values()))
    device, dtype = first.device, first.dtype  # observations and rewards in the policy's dtype
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    offset = 0 if rows is None else rows[0]
    obs = env.reset(seed=int(seed) + offset * env.envs_per_task).to(dtype)
    horizon = env.horizon
    alive = torch.ones(obs.shape[:2], dtype=torch.bool, device=device)
    last_obs = obs
    steps = []
    succeeded = None  # [T, E]: success seen in a step that happened (envs that report it)
    for _ in range(horizon):
        action = policy.sample(params, obs, gen, rows)
        next_obs, reward, terminated, truncated, *success = env.step(action)
        next_obs, reward = next_obs.to(dtype), reward.to(dtype)
        if success and success[0] is not None:
            now = success[0] & alive
            succeeded = now if succeeded is None else succeeded | now
        terminated = terminated & alive
        truncated = truncated & alive
        steps.append((obs, action, reward, alive, terminated, truncated))
        last_obs = torch.where(alive.unsqueeze(-1), next_obs, last_obs)
        alive = alive & ~(terminated | truncated)
        obs = next_obs
        if stop_early and not bool(alive.any()):
            break
    obs_, act, rew, mask, term, trunc = (torch.stack(x, 2) for x in zip(*steps))
    pad = horizon - obs_.shape[2]
    if pad:  # every episode ended early: pad time to H with masked steps
        obs_, act, rew, mask, term, trunc = (
            torch.cat([x, x.new_zeros((*x.shape[:2], pad, *x.shape[3:]))], 2)
            for x in (obs_, act, rew, mask, term, trunc)
        )
    # A copy still running at the horizon is truncated there.
    trunc[..., -1] |= mask[..., -1] & ~term[..., -1]
    return Episodes(obs_, act, rew * mask, mask.to(rew.dtype), term, trunc, last_obs, succeeded)


class BatchedSampler(Sampler):
    """Rollouts of a family's torch-native batched env, entirely on ``device``."""

    def __init__(self, family: TaskFamily, policy: Policy, config: SamplingConfig,
                 device="cpu"):
        if not family.batched:
            raise ValueError(f"{family.name} has no batched env; use VectorSampler")
        self.family, self.policy = family, policy
        self.episodes_per_task, self.batch_unit = config.episodes, config.batch_unit
        self.device = torch.device(device)

    def collect(self, tasks: list, params: Params, seed: int, episodes: int,
                rows: tuple[int, int] | None = None) -> Episodes:
        env = self.family.make_batched(tasks, episodes, self.device)
        return rollout(env, self.policy, params, seed, rows=rows)


class _TensorView:
    """Presents a :class:`~meta_rl.vector.TaskVectorEnv` as a ``[T, E, ...]`` tensor env."""

    def __init__(self, vec, num_tasks: int, envs_per_task: int, horizon: int,
                 device: torch.device, discrete: bool):
        self.vec, self.shape, self.horizon = vec, (num_tasks, -1), horizon
        self.envs_per_task, self.device, self.discrete = envs_per_task, device, discrete

    def _t(self, x: np.ndarray, dtype=None) -> Tensor:
        t = torch.as_tensor(x, device=self.device)
        t = t if dtype is None else t.to(dtype)
        return t.view(self.shape[0], -1, *t.shape[1:])

    def reset(self, seed: int) -> Tensor:
        obs, _ = self.vec.reset(seed=seed)
        return self._t(obs, torch.float32)

    def step(self, action: Tensor):
        act = action.cpu().numpy().reshape(-1, *action.shape[2:])
        if not self.discrete:
            act = act.astype(np.float32)
        obs, rew, term, trunc, info = self.vec.step(act)
        success = info.get("success")
        return (self._t(obs, torch.float32), self._t(rew, torch.float32), self._t(term),
                self._t(trunc), None if success is None else self._t(success))


class VectorSampler(Sampler):
    """Rollouts of ``T x E`` Gymnasium envs (one task each) stepped in worker processes."""

    def __init__(self, family: TaskFamily, policy: Policy, config: SamplingConfig, device="cpu",
                 num_workers: int | None = None, timeout: float | None = None):
        from meta_rl.vector import TaskVectorEnv

        self.family, self.policy = family, policy
        self.episodes_per_task, self.batch_unit = config.episodes, config.batch_unit
        self.device = torch.device(device)
        self.vec = TaskVectorEnv(family, num_workers=num_workers, timeout=timeout)

    def collect(self, tasks: list, params: Params, seed: int, episodes: int,
                rows: tuple[int, int] | None = None) -> Episodes:
        self.vec.set_tasks([task for task in tasks for _ in range(episodes)])
        view = _TensorView(self.vec, len(tasks), episodes, self.family.horizon, self.device,
                           self.policy.discrete)
        # The main process steps a slice of the envs itself. Between its torch ops, torch's
        # other OpenMP threads spin-wait on the cores the workers need: on 2 cores that cut
        # HalfCheetah sampling from 41k to 28k env steps/s (docs/benchmarks.md). The policy's
        # ops here are small, so they run on one thread; the caller's setting comes back after.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return rollout(view, self.policy, params, seed, stop_early=True, rows=rows)
        finally:
            torch.set_num_threads(threads)

    def close(self) -> None:
        self.vec.close()


def make_sampler(family: TaskFamily, policy: Policy, config: SamplingConfig = SamplingConfig(),
                 device="cpu", num_workers: int | None = None,
                 timeout: float | None = None) -> Sampler:
    """The batched sampler where the family has one, else the worker-process vector sampler
    (``num_workers`` steppers, default one per CPU core; ``timeout`` seconds per env call,
    default the family's). ``config`` gives the episodes per task and the batch unit;
    ``meta_batch`` is the caller's (the sampler takes any list of tasks)."""
    if family.batched:
        return BatchedSampler(family, policy, config, device)
    return VectorSampler(family, policy, config, device, num_workers, timeout)
