"""Seed streams: which seeds training uses, and the disjoint stream evaluation draws from.

Training samples iteration ``i``'s tasks and rollouts from :func:`iteration_seed` ``(seed, i)``, a
31-bit word of ``SeedSequence([seed, i])``. Evaluation draws from a different stream,
``SeedSequence(seed, spawn_key=(EVAL_TAG,))`` (its entropy ``[seed, 0, 0, 0, EVAL_TAG]`` is not
``[s, i]`` for any seed ``s`` and iteration ``i < 2**96``), taking 31-bit words in order and
skipping any word a training run used (:func:`eval_seeds`), so held-out tasks never come from a
seed training used. (Families with finitely many tasks, such as ``HalfCheetahDir``, necessarily
repeat training tasks.)
"""

from __future__ import annotations

import numpy as np

from meta_rl.config import TrainConfig

EVAL_TAG = 0xE7A1
"""spawn key that separates evaluation seeds from training's ``SeedSequence([seed, i])``"""


def iteration_seed(seed: int, iteration: int) -> int:
    """A well-mixed 31-bit seed for iteration ``iteration`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, iteration]).generate_state(1)[0] >> 1)


def training_seeds(config: TrainConfig) -> set[int]:
    """Task seeds of the run's iterations and of its pretrained baseline's (a superset)."""
    n = config.iterations * (config.inner.inner_steps + 1)
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
