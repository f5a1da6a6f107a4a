"""The training configuration: one frozen dataclass, a docstring per field, validated on creation.

Precedence (applied by the CLI): defaults < preset or YAML file < command-line flags. A config
round-trips through ``to_dict``/``from_dict`` (that is what ``config.yaml`` in a run directory
holds). Derived values are properties.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from meta_rl.algorithms import ALGORITHMS, AlgoConfig
from meta_rl.inner import ReturnsConfig
from meta_rl.sampling import check_batch_unit

DEFAULT_OUTER = {"maml": "trpo", "metasgd": "trpo", "reptile": "sgd"}

#: fields that say how a run executes, not what it computes (on one device): a resumed run may
#: change them, and two configs that differ only in them describe the same experiment
RUNTIME_FIELDS = ("device", "threads", "num_workers", "checkpoint_every", "keep_every")


@dataclass(frozen=True)
class TrainConfig:
    env: str = "Navigation2D"
    """registered family name, or ``module:Class`` for a user's own TaskFamily"""
    env_kwargs: dict = field(default_factory=dict)
    """keyword arguments for the family's constructor (e.g. ``horizon``)"""
    algo: str = "maml"
    """maml, metasgd or reptile"""
    outer: str | None = None
    """trpo or adam (MAML, Meta-SGD; default trpo); sgd or adam (Reptile; default sgd)"""
    iterations: int = 100
    """meta-iterations"""
    meta_batch: int = 20
    """tasks per meta-iteration (T)"""
    episodes: int = 20
    """episodes per task for each inner step and for validation (E)"""
    batch_unit: str = "episodes"
    """what a batch counts: ``episodes`` (exactly E per task) or ``steps`` (whole episodes until
    each task has E x horizon env steps, so episodes that end early make room for more; how the
    MAML authors' rllab sampler counts a batch)"""
    inner_steps: int = 1
    """policy-gradient steps in the inner loop (K)"""
    inner_lr: float = 0.1
    """inner step size (Meta-SGD: initial value of the learned rates)"""
    first_order: bool = False
    """first-order meta-gradient (no second derivatives through the inner loop)"""
    hidden: tuple[int, ...] = (100, 100)
    """hidden layer sizes of the policy MLP"""
    activation: str = "relu"
    """hidden activation: relu (the MAML paper's; torch's CPU relu is ~10x cheaper than tanh) or tanh"""
    init_std: float = 1.0
    """initial standard deviation of the Gaussian policy"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 1.0
    """GAE lambda (1.0: return minus baseline, as in the MAML paper)"""
    normalize_advantages: bool = True
    """standardise advantages per task"""
    outer_lr: float | None = None
    """Adam's learning rate (default 1e-3), or Reptile's epsilon with sgd (default 1.0, the
    Reptile paper's initial outer step size)"""
    max_grad_norm: float | None = None
    """clip the outer gradient to this norm (Adam)"""
    max_kl: float = 1e-2
    """TRPO: bound on the mean KL of the adapted policies"""
    cg_iters: int = 10
    """TRPO: conjugate-gradient iterations"""
    cg_damping: float = 1e-5
    """TRPO: damping added to the curvature"""
    ls_max_steps: int = 15
    """TRPO: line-search steps"""
    ls_backtrack: float = 0.8
    """TRPO: line-search shrink factor"""
    fisher_fraction: float = 0.2
    """TRPO: fraction of every episode's time steps (evenly spaced) on which curvature products
    are estimated; 0.2 is 4x cheaper than exact (1.0) and learned as well in docs/benchmarks.md"""
    cg_warm_start: bool = False
    """TRPO: start CG from the previous direction"""
    rate_lr: float | None = None
    """Meta-SGD: give the learned inner rates their own Adam at this learning rate, stepped on
    the post-adaptation surrogate's gradient while the outer step updates the policy alone
    (None: the outer step updates both, as in the Meta-SGD paper)"""
    seed: int = 0
    """seed for tasks, initial parameters and sampling"""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda"""
    threads: int | None = None
    """torch intra-op threads in the main process (None: torch's default)"""
    num_workers: int | None = None
    """parallel env steppers for families without a batched env: the main process and
    ``num_workers - 1`` worker processes (None: one per CPU core; 1: the main process alone)"""
    checkpoint_every: int = 10
    """write checkpoint.pt every this many iterations (and at the end)"""
    keep_every: int = 0
    """also keep a copy of the model every this many iterations, as
    ``snapshots/iteration-NNNNNN.pt`` (0: none); ``meta-rl evaluate --iteration N`` evaluates one"""

    def __post_init__(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

        def positive(name, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a positive number, got {v!r}")

        for name in ("iterations", "meta_batch", "episodes", "cg_iters", "ls_max_steps",
                     "checkpoint_every"):
            positive_int(name)
        if not isinstance(self.inner_steps, int) or self.inner_steps < 0:
            raise ValueError(f"inner_steps must be an integer >= 0, got {self.inner_steps!r}")
        for name in ("inner_lr", "init_std", "max_kl", "cg_damping"):
            positive(name)
        for name in ("outer_lr", "max_grad_norm", "rate_lr"):
            positive(name, allow_none=True)
        for name in ("threads", "num_workers"):
            if getattr(self, name) is not None:
                positive_int(name)
        if not isinstance(self.keep_every, int) or isinstance(self.keep_every, bool) \
                or self.keep_every < 0:
            raise ValueError(f"keep_every must be an integer >= 0 (0 keeps no snapshots), "
                             f"got {self.keep_every!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        for name in ("ls_backtrack", "fisher_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")
        if self.algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {', '.join(ALGORITHMS)}, got {self.algo!r}")
        allowed = ("sgd", "adam") if self.algo == "reptile" else ("trpo", "adam")
        if self.outer is not None and self.outer not in allowed:
            raise ValueError(
                f"outer {self.outer!r} does not fit algo {self.algo!r}; choose {' or '.join(allowed)}"
            )
        if self.rate_lr is not None and self.algo != "metasgd":
            raise ValueError(f"rate_lr is for algo metasgd (its learned inner rates); algo "
                             f"{self.algo!r} has none, so leave rate_lr unset")
        if self.algo == "reptile" and self.inner_steps < 1:
            raise ValueError("reptile needs inner_steps >= 1 (its update is theta' - theta)")
        if self.algo == "metasgd" and self.inner_steps < 1:
            raise ValueError("metasgd needs inner_steps >= 1 (its learned rates act only in the "
                             "inner loop); use algo maml for inner_steps 0")
        if (not isinstance(self.hidden, tuple) or not self.hidden
                or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in self.hidden)):
            raise ValueError(f"hidden must be a list of positive layer sizes, got {self.hidden!r}")
        check_batch_unit(self.batch_unit)
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be tanh or relu, got {self.activation!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not isinstance(self.env, str) or not self.env:
            raise ValueError(f"env must be a family name or module:Class, got {self.env!r}")
        if not isinstance(self.env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a mapping, got {self.env_kwargs!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    # -- derived --------------------------------------------------------------------------------
    @property
    def outer_name(self) -> str:
        return self.outer or DEFAULT_OUTER[self.algo]

    @property
    def algo_config(self) -> AlgoConfig:
        default_lr = 1.0 if (self.algo == "reptile" and self.outer_name == "sgd") else 1e-3
        return AlgoConfig(
            inner_steps=self.inner_steps,
            inner_lr=self.inner_lr,
            first_order=self.first_order or self.algo == "reptile",
            outer=self.outer_name,
            outer_lr=self.outer_lr if self.outer_lr is not None else default_lr,
            max_grad_norm=self.max_grad_norm,
            max_kl=self.max_kl,
            cg_iters=self.cg_iters,
            cg_damping=self.cg_damping,
            ls_max_steps=self.ls_max_steps,
            ls_backtrack=self.ls_backtrack,
            fisher_fraction=self.fisher_fraction,
            cg_warm_start=self.cg_warm_start,
            rate_lr=self.rate_lr,
            returns=ReturnsConfig(self.gamma, self.gae_lambda, self.normalize_advantages),
        )

    def resolved_device(self) -> torch.device:
        """The torch device; ``cuda`` without CUDA is a ValueError."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(
                f"device {self.device!r} was asked for but CUDA is not available "
                "(install a CUDA build of torch, or use --device cpu)"
            )
        return torch.device(self.device)

    # -- (de)serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "TrainConfig | None" = None) -> "TrainConfig":
        """Build from a mapping (YAML), on top of ``base``; unknown keys are a ValueError."""
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of keys to values, got {type(data).__name__}")
        known = cls.field_names()
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        data = dict(data)
        if "hidden" in data:
            data["hidden"] = parse_hidden(data["hidden"])
        if data.get("env_kwargs") is None and "env_kwargs" in data:
            data["env_kwargs"] = {}
        for key in ("inner_lr", "init_std", "max_kl", "cg_damping", "gamma", "gae_lambda",
                    "ls_backtrack", "fisher_fraction", "outer_lr", "max_grad_norm",
                    "rate_lr"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = float(data[key])
        return dataclasses.replace(base or cls(), **data)


def parse_hidden(value: Any) -> tuple[int, ...]:
    """``"100,100"``, ``[100, 100]`` or ``100`` -> ``(100, 100)``; anything else a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str):
        try:
            items = [int(x) for x in value.split(",")]
        except ValueError:
            raise ValueError(
                f"hidden must be comma-separated positive integers like 100,100, got {value!r}"
            ) from None
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"hidden must be a list of positive layer sizes, got {value!r}")
    if not items or any(not isinstance(h, int) or isinstance(h, bool) or h <= 0 for h in items):
        raise ValueError(f"hidden must be positive integers like 100,100, got {value!r}")
    return tuple(items)
