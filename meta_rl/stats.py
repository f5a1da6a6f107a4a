"""Statistics of an adaptation curve: the mean over tasks and its 95% confidence interval.

Per-task mean returns ``r_1..r_n`` give ``mean(r) +/- q * std(r) / sqrt(n)``, ``q`` the 0.975
quantile of Student's t with ``n - 1`` degrees of freedom (SciPy), or 1.96 without SciPy. With
one task there is no interval (NaN, ``null`` in JSON).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


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
    success: dict | None = None
    """where the family's envs report success: ``{"mean", "ci95", "per_task"}`` of the per-task
    success rate (the fraction of its episodes that succeeded), like the returns"""

    @property
    def num_tasks(self) -> int:
        return len(self.per_task[0]) if self.per_task else 0

    def to_dict(self) -> dict:
        return {
            "mean": self.mean, "ci95": self.ci95, "tasks": self.num_tasks,
            "wall_s": round(self.wall_s, 4), "env_steps": self.env_steps,
            "per_task": self.per_task, **self.extra,
            **({} if self.success is None else {"success": self.success}),
        }


def _t_distribution():
    try:
        from scipy.stats import t
    except ImportError:
        return None
    return t


def ci_method() -> str:
    return "student-t" if _t_distribution() is not None else "normal"


def mean_ci95(values) -> tuple[float, float]:
    """Mean of ``values`` and the half-width of its 95% confidence interval (module docstring)."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    mean = float(x.mean())
    if x.size < 2:  # one task: no interval (written as null, shown without one)
        return mean, float("nan")
    t = _t_distribution()
    q = float(t.ppf(0.975, x.size - 1)) if t is not None else 1.96
    return mean, float(q * x.std(ddof=1) / math.sqrt(x.size))


def curve(per_task) -> dict:
    """``{"mean", "ci95", "per_task"}`` of per-task values ``[K + 1, n]``."""
    stats = [mean_ci95(row) for row in per_task]
    return {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats],
            "per_task": [[float(v) for v in row] for row in per_task]}


def summarize(per_task: np.ndarray, env_steps, wall_s: float, success=None,
              **extra) -> MethodResult:
    """A :class:`MethodResult` from per-task returns ``[K + 1, n]`` (and per-task success rates
    ``[K + 1, n]``, where the envs report success)."""
    returns = curve(per_task)
    return MethodResult(
        mean=returns["mean"], ci95=returns["ci95"], per_task=returns["per_task"],
        env_steps=[float(s) for s in env_steps], wall_s=wall_s, extra=extra,
        success=None if success is None else curve(success),
    )
