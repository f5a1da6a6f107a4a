"""Collect ``E`` episodes for each of ``T`` tasks, each task with its own policy parameters.

Two samplers share one interface, ``sampler.sample(tasks, params, seed) -> Episodes``:

- :class:`BatchedSampler` for families with ``make_batched``: all ``T x E`` envs and the policy
  live on one device; a rollout is ``H`` iterations of (one batched policy forward, one env
  step), with no Python loop over tasks or envs and no host synchronisation.
- :class:`VectorSampler` for every other family (MuJoCo, users' own): a
  :class:`~meta_rl.vector.TaskVectorEnv` steps ``T x E`` Gymnasium envs, each with its own task,
  in worker processes, while the policy runs batched in the main process.

``params`` carry a leading task dimension ``[T, ...]`` (see :func:`meta_rl.policies.batch_params`).
Sampling never builds an autograd graph.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from envs import TaskFamily
from meta_rl.episodes import Episodes
from meta_rl.policies import Params, Policy


class Sampler:
    """Interface: collects ``episodes_per_task`` episodes per task."""

    family: TaskFamily
    episodes_per_task: int
    device: torch.device

    def sample(self, tasks: list, params: Params, seed: int) -> Episodes:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _check_params(params: Params, num_tasks: int) -> None:
    for name, p in params.items():
        if p.dim() == 0 or p.shape[0] != num_tasks:
            raise ValueError(
                f"sampler needs per-task parameters with leading dim T={num_tasks}; "
                f"{name} has shape {list(p.shape)} (use meta_rl.policies.batch_params)"
            )


def rollout(env, policy: Policy, params: Params, seed: int, stop_early: bool = False) -> Episodes:
    """Run one episode in each of the ``T x E`` copies of ``env`` (``reset``/``step`` on tensors).

    With ``stop_early`` the loop ends once every copy is done (a host sync per step, worth it
    only when each step is costly, as with worker processes).
    """
    device = next(iter(params.values())).device
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    obs = env.reset(seed=int(seed))
    horizon = env.horizon
    alive = torch.ones(obs.shape[:2], dtype=torch.bool, device=device)
    last_obs = obs
    steps = []
    for _ in range(horizon):
        action = policy.sample(params, obs, gen)
        next_obs, reward, terminated, truncated = env.step(action)
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
    return Episodes(obs_, act, rew * mask, mask.to(rew.dtype), term, trunc, last_obs)


class BatchedSampler(Sampler):
    """Rollouts of a family's torch-native batched env, entirely on ``device``."""

    def __init__(self, family: TaskFamily, policy: Policy, episodes_per_task: int, device="cpu"):
        if not family.batched:
            raise ValueError(f"{family.name} has no batched env; use VectorSampler")
        self.family, self.policy = family, policy
        self.episodes_per_task = TaskFamily.check_count(episodes_per_task, "episodes_per_task")
        self.device = torch.device(device)

    @torch.no_grad()
    def sample(self, tasks: list, params: Params, seed: int) -> Episodes:
        _check_params(params, len(tasks))
        env = self.family.make_batched(tasks, self.episodes_per_task, self.device)
        return rollout(env, self.policy, params, seed)


class _TensorView:
    """Presents a :class:`~meta_rl.vector.TaskVectorEnv` as a ``[T, E, ...]`` tensor env."""

    def __init__(self, vec, num_tasks: int, horizon: int, device: torch.device, discrete: bool):
        self.vec, self.shape, self.horizon = vec, (num_tasks, -1), horizon
        self.device, self.discrete = device, discrete

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
        obs, rew, term, trunc, _ = self.vec.step(act)
        return (self._t(obs, torch.float32), self._t(rew, torch.float32), self._t(term),
                self._t(trunc))


class VectorSampler(Sampler):
    """Rollouts of ``T x E`` Gymnasium envs (one task each) stepped in worker processes."""

    def __init__(
        self,
        family: TaskFamily,
        policy: Policy,
        episodes_per_task: int,
        device="cpu",
        num_workers: int | None = None,
    ):
        from meta_rl.vector import TaskVectorEnv

        self.family, self.policy = family, policy
        self.episodes_per_task = TaskFamily.check_count(episodes_per_task, "episodes_per_task")
        self.device = torch.device(device)
        self.vec = TaskVectorEnv(family, num_workers=num_workers)

    @torch.no_grad()
    def sample(self, tasks: list, params: Params, seed: int) -> Episodes:
        _check_params(params, len(tasks))
        self.vec.set_tasks([task for task in tasks for _ in range(self.episodes_per_task)])
        view = _TensorView(self.vec, len(tasks), self.family.horizon, self.device,
                           self.policy.discrete)
        return rollout(view, self.policy, params, seed, stop_early=True)

    def close(self) -> None:
        self.vec.close()


def make_sampler(
    family: TaskFamily,
    policy: Policy,
    episodes_per_task: int,
    device="cpu",
    num_workers: int | None = None,
) -> Sampler:
    """The batched sampler where the family has one, else the worker-process vector sampler."""
    if family.batched:
        return BatchedSampler(family, policy, episodes_per_task, device)
    return VectorSampler(family, policy, episodes_per_task, device, num_workers)


def mean_return(episodes: Episodes) -> Tensor:
    """Mean undiscounted episode return over all tasks and episodes (a 0-d tensor)."""
    return episodes.returns().mean()
