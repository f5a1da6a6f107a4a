"""The typed batch of experience that flows from samplers to the learning code.

``T`` tasks, ``E`` episodes per task, ``H`` the horizon, ``O`` observation size, ``A`` action size.
Each row ``[t, e]`` holds one episode from its first step; steps after it ended have ``mask == 0``
and carry no information. A row whose mask is 0 throughout is padding: a batch counted in env
steps (``batch_unit="steps"``) gives tasks different numbers of episodes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Episodes(NamedTuple):
    """``E`` episodes for each of ``T`` tasks.

    - ``obs [T, E, H, O]``: the observation each action was taken in;
    - ``actions [T, E, H, A]`` (float, Box) or ``[T, E, H]`` (int64, Discrete);
    - ``rewards [T, E, H]``;
    - ``mask [T, E, H]``: 1.0 for steps that happened, 0.0 after the episode ended;
    - ``terminated [T, E, H]`` (bool): this step ended the episode in a terminal state;
    - ``truncated [T, E, H]`` (bool): this step ended it by the time limit (bootstrap from
      ``last_obs``);
    - ``last_obs [T, E, O]``: the observation after the episode's final step;
    - ``success [T, E]`` (bool) or ``None``: whether the env's ``info["success"]`` was true at
      any step of the episode (Meta-World's rule); ``None`` when the family's envs do not report
      success.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    terminated: Tensor
    truncated: Tensor
    last_obs: Tensor
    success: Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[1]

    @property
    def horizon(self) -> int:
        return self.rewards.shape[2]

    @property
    def lengths(self) -> Tensor:
        """Steps in each episode: ``[T, E]``."""
        return self.mask.sum(-1)

    @property
    def valid(self) -> Tensor:
        """Which rows hold an episode (not padding): ``[T, E]`` bool."""
        return self.mask[..., 0] > 0

    def returns(self) -> Tensor:
        """Undiscounted return of each episode: ``[T, E]`` (0 for padding rows)."""
        return (self.rewards * self.mask).sum(-1)

    def task_returns(self) -> Tensor:
        """Mean undiscounted return of each task's episodes: ``[T]``."""
        valid = self.valid.to(self.rewards.dtype)
        return (self.returns() * valid).sum(1) / valid.sum(1).clamp_min(1)

    def task_success(self) -> Tensor | None:
        """Fraction of each task's episodes that succeeded: ``[T]`` (``None`` without success)."""
        if self.success is None:
            return None
        valid = self.valid.to(self.rewards.dtype)
        return (self.success.to(valid.dtype) * valid).sum(1) / valid.sum(1).clamp_min(1)

    def num_episodes(self) -> int:
        """Episodes held, padding excluded (host sync)."""
        return int(self.valid.sum().item())

    def num_steps(self) -> int:
        """Environment steps taken (host sync: call once per iteration, not in a loop)."""
        return int(self.mask.sum().item())

    def map(self, fn) -> "Episodes":
        """These episodes with ``fn`` applied to every tensor (``success`` stays ``None`` when it
        is ``None``)."""
        return Episodes(*(None if x is None else fn(x) for x in self))

    def to(self, device: torch.device | str) -> "Episodes":
        return self.map(lambda x: x.to(device))
