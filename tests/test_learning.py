"""Small but real learning checks on Navigation2D (seeded, CPU): each algorithm must improve the
post-adaptation return clearly above where it started."""

import pytest

from meta_rl.config import TrainConfig
from meta_rl.trainer import Trainer

SETTINGS = {
    "maml": dict(algo="maml", outer="trpo"),
    "metasgd": dict(algo="metasgd", outer="trpo"),
    "metasgd-rate-adam": dict(algo="metasgd", outer="trpo", rate_lr=1e-3),
    "reptile": dict(algo="reptile", outer="sgd", outer_lr=1.0, inner_steps=3, inner_lr=0.3),
    "maml-adam": dict(algo="maml", outer="adam", outer_lr=0.01),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_navigation_post_adaptation_return_improves(name):
    config = TrainConfig.from_dict(dict(env="Navigation2D", meta_batch=10, episodes=10,
                                         hidden=(64, 64), iterations=25, fisher_fraction=0.2,
                                         seed=0, device="cpu", **SETTINGS[name]))
    trainer = Trainer(config)
    try:
        history = trainer.train()
    finally:
        trainer.close()
    start = history[0]["post_adapt_return"]
    end = sum(h["post_adapt_return"] for h in history[-3:]) / 3
    # A random policy scores about -100 here; an adapted one nearer 0.
    assert end > start + 20, f"{name}: post-adaptation return {start:.1f} -> {end:.1f}"
    assert all(h["env_steps"] > 0 for h in history)
