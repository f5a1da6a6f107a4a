"""The configuration of a run: one tree of frozen dataclasses, every field documented and checked.

    TrainConfig            env, env_kwargs, algo, outer, iterations, seed
    ├── policy    PolicyConfig     hidden, activation, init_std
    ├── sampling  SamplingConfig   meta_batch, episodes, batch_unit
    ├── returns   ReturnsConfig    gamma, gae_lambda, normalize_advantages
    ├── inner     InnerConfig      inner_steps, inner_lr, first_order
    ├── optim     OptimConfig      outer_lr, max_grad_norm, rate_lr
    ├── trpo      TRPOConfig       max_kl, cg_iters, cg_damping, ls_max_steps, ls_backtrack,
    │                              fisher_fraction, cg_warm_start
    ├── run       RunConfig        device, threads, num_workers, checkpoint_every, keep_every
    └── eval      EvalConfig       tasks, steps, episodes, seed, methods, ppo_tasks,
                                   later_lr_scale, later_lr_decay, batch_unit

Each field declares its check beside it (:class:`Check`); the check runs when the dataclass is
built, so a config that exists is valid, and a bad value is a ``ValueError`` that names it and
says what it must be. Rules that tie fields together are in :meth:`TrainConfig.__post_init__`.
The CLI makes its flags from these fields (``meta_rl.flags``): a field's docstring is its help
and its default is shown, so no setting is declared twice.

The names of the training settings are unique across the tree, so a mapping (YAML, or
:meth:`TrainConfig.from_dict`) may give them flat (``inner_lr: 0.5``) or by section
(``inner: {inner_lr: 0.5}``). The evaluation settings are always given under ``eval:``: they
are what ``meta-rl evaluate`` uses for this run unless told otherwise. ``config.yaml`` in a run
directory holds :meth:`TrainConfig.to_dict`, by section. Derived values are properties.

This module configures; it imports none of the modules it configures.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import textwrap
from dataclasses import dataclass, field, fields
from typing import Any, Callable

#: algorithm -> the outer steps it can take, the default first (``meta_rl.algorithms`` builds
#: them; a test checks that the two agree)
ALGORITHMS: dict[str, tuple[str, ...]] = {
    "maml": ("trpo", "adam"),
    "metasgd": ("trpo", "adam"),
    "reptile": ("sgd", "adam"),
}
BATCH_UNITS = ("episodes", "steps")
METHODS = ("meta", "random", "pretrained", "ppo")
"""every evaluation method, in report order"""


# -- checks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """What a field's value must be: its Python ``kind``, a test, and the words for the error.

    ``check(name, value)`` returns the value (an ``int`` where a ``float`` is wanted becomes a
    float) or raises ``ValueError("<name> must be <must>, got <value>")``. ``parse(text)`` turns
    command-line text into a value of the kind (the flag's argparse type).
    """

    kind: type
    test: Callable[[Any], bool]
    must: str
    optional: bool = False
    choices: tuple = ()
    parser: Callable[[str], Any] | None = None

    def __call__(self, name: str, value: Any) -> Any:
        if value is None and self.optional:
            return None
        given = value
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is tuple and isinstance(value, list):
            value = tuple(value)
        ok = isinstance(value, self.kind) and not (
            isinstance(value, bool) and self.kind is not bool)
        if not ok or not self.test(value):
            none = " (or null for none)" if self.optional else ""
            raise ValueError(f"{name} must be {self.must}{none}, got {given!r}")
        return value

    def parse(self, text: str) -> Any:
        if self.optional and text.lower() in ("none", "null"):
            return None
        try:
            return (self.parser or _PARSERS.get(self.kind, self.kind))(text)
        except ValueError:
            return text  # the check then says what it must be


def parse_hidden(value: Any) -> tuple[int, ...]:
    """``"100,100"``, ``[100, 100]`` or ``100`` -> ``(100, 100)``; anything else a ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str):
        try:
            return tuple(int(x) for x in value.split(","))
        except ValueError:
            raise ValueError(
                f"hidden must be comma-separated positive integers like 100,100, got {value!r}"
            ) from None
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise ValueError(f"hidden must be a list of positive layer sizes, got {value!r}")


def parse_mapping(text: str) -> dict:
    """``"horizon=50,frame_skip=1"`` -> ``{"horizon": 50, "frame_skip": 1}`` (values read as
    YAML scalars)."""
    import yaml

    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE pairs like horizon=50,frame_skip=1, got {text!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise ValueError(text)


_PARSERS: dict[type, Callable[[str], Any]] = {
    int: int, float: float, bool: _boolean, dict: parse_mapping,
}


def _sizes(v) -> bool:
    return len(v) > 0 and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in v)


POSITIVE_INT = Check(int, lambda v: v > 0, "a positive integer")
COUNT = Check(int, lambda v: v >= 0, "an integer >= 0")
POSITIVE = Check(float, lambda v: 0 < v < math.inf, "a positive number")
OPTIONAL_POSITIVE = dataclasses.replace(POSITIVE, optional=True)
OPTIONAL_POSITIVE_INT = dataclasses.replace(POSITIVE_INT, optional=True)
OPTIONAL_COUNT = dataclasses.replace(COUNT, optional=True)
UNIT = Check(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
FRACTION = Check(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
FLAG = Check(bool, lambda v: True, "true or false")
SIZES = Check(tuple, _sizes, "a list of positive layer sizes like 100,100", parser=parse_hidden)
MAPPING = Check(dict, lambda v: all(isinstance(k, str) for k in v), "a mapping of names to values")
NAME = Check(str, lambda v: bool(v), "a family name or module:Class")


def one_of(*choices: str, optional: bool = False) -> Check:
    return Check(str, lambda v: v in choices, "one of " + ", ".join(choices), optional, choices)


def setting(default: Any, check: Check, **metadata: Any):
    """A dataclass field with its check (and any other metadata, e.g. ``flag_keys``)."""
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"check": check, **metadata})
    return field(default=default, metadata={"check": check, **metadata})


class Section:
    """Base of every config dataclass: runs each field's check (and coerces it) on creation."""

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata.get("check")
            if check is not None:
                object.__setattr__(self, f.name, check(f.name, getattr(self, f.name)))


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of dataclass ``cls`` (read from its source), one line."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


# -- the sections ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyConfig(Section):
    """The policy network (``meta_rl.policies.make_policy``)."""

    hidden: tuple[int, ...] = setting((100, 100), SIZES)
    """hidden layer sizes of the policy MLP"""
    activation: str = setting("relu", one_of("relu", "tanh"))
    """hidden activation: relu (the MAML paper's; cheaper than tanh on the CPU) or tanh"""
    init_std: float = setting(1.0, POSITIVE)
    """initial standard deviation of the Gaussian policy, in half-widths of the action box"""
    dtype: str = setting("float32", one_of("float32", "float64"))
    """floating-point type of the policy's parameters and of the episodes it samples"""


@dataclass(frozen=True)
class SamplingConfig(Section):
    """How much experience a meta-iteration collects (``meta_rl.sampling``)."""

    meta_batch: int = setting(20, POSITIVE_INT)
    """tasks per meta-iteration (T)"""
    episodes: int = setting(20, POSITIVE_INT)
    """episodes per task for each inner step and for validation (E)"""
    batch_unit: str = setting("episodes", one_of(*BATCH_UNITS))
    """what a batch counts: episodes (exactly E per task) or steps (whole episodes until each
    task has E x horizon env steps, so episodes that end early make room for more; how the MAML
    authors' rllab sampler counts a batch)"""


@dataclass(frozen=True)
class ReturnsConfig(Section):
    """How advantages are computed from episodes (``meta_rl.returns.compute_advantages``)."""

    gamma: float = setting(0.99, UNIT)
    """discount factor"""
    gae_lambda: float = setting(1.0, UNIT)
    """GAE lambda (1: return minus baseline, as in the MAML paper)"""
    normalize_advantages: bool = setting(True, FLAG)
    """standardise advantages per task"""


@dataclass(frozen=True)
class InnerConfig(Section):
    """The inner loop: the policy-gradient steps that adapt to one task (``meta_rl.inner``)."""

    inner_steps: int = setting(1, COUNT)
    """policy-gradient steps in the inner loop (K)"""
    inner_lr: float = setting(0.1, POSITIVE)
    """inner step size alpha (Meta-SGD: the initial value of every learned rate)"""
    first_order: bool = setting(False, FLAG)
    """drop the second-order terms of the meta-gradient (first-order MAML)"""


@dataclass(frozen=True)
class OptimConfig(Section):
    """The outer optimiser's settings, for Adam and Reptile (``meta_rl.outer``)."""

    outer_lr: float | None = setting(None, OPTIONAL_POSITIVE)
    """Adam's learning rate (default 1e-3), or Reptile's epsilon with sgd (default 1, the
    Reptile paper's initial outer step size)"""
    max_grad_norm: float | None = setting(None, OPTIONAL_POSITIVE)
    """clip Adam's meta-gradient to this norm (default: no clipping)"""
    rate_lr: float | None = setting(None, OPTIONAL_POSITIVE)
    """Meta-SGD: give the learned inner rates an Adam of their own at this learning rate,
    stepped on the same meta-gradient while the outer step moves the policy alone (default: the
    outer step moves both, as in the Meta-SGD paper)"""


@dataclass(frozen=True)
class TRPOConfig(Section):
    """TRPO's outer step (``meta_rl.outer.TRPO``), the MAML paper's."""

    max_kl: float = setting(1e-2, POSITIVE)
    """bound on the mean KL between the adapted policies before and after the meta-step"""
    cg_iters: int = setting(10, POSITIVE_INT)
    """conjugate-gradient iterations"""
    cg_damping: float = setting(1e-5, POSITIVE)
    """damping added to the curvature"""
    ls_max_steps: int = setting(15, POSITIVE_INT)
    """line-search steps"""
    ls_backtrack: float = setting(0.8, FRACTION)
    """line-search shrink factor"""
    fisher_fraction: float = setting(0.2, FRACTION)
    """fraction of every episode's time steps (evenly spaced) on which curvature products are
    estimated; 0.2 is 4x cheaper than exact (1) and learns as well (docs/benchmarks.md)"""
    cg_warm_start: bool = setting(False, FLAG)
    """start conjugate gradients from the previous iteration's direction"""


@dataclass(frozen=True)
class RunConfig(Section):
    """How a run executes, not what it computes: a resumed run may change these (but device)."""

    device: str = setting("auto", Check(str, lambda v: v in ("auto", "cpu", "cuda")
                                        or v.startswith("cuda:"), "auto, cpu, cuda or cuda:N"))
    """auto (cuda when available), cpu or cuda"""
    threads: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """torch intra-op threads in the main process (default: torch's)"""
    num_workers: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """env steppers for families without a batched env: the main process and num_workers - 1
    worker processes (default: one per CPU core; 1: the main process alone)"""
    env_timeout: float | None = setting(None, OPTIONAL_POSITIVE)
    """seconds an env call in the worker samplers may take before the run stops, naming the
    family and the call (default: the family's call_timeout, 600 for the built-in ones)"""
    checkpoint_every: int = setting(10, POSITIVE_INT)
    """write checkpoint.pt every this many iterations (and at the end)"""
    keep_every: int = setting(0, COUNT)
    """also keep the model every this many iterations in snapshots/ (0: none); evaluate one with
    meta-rl evaluate DIR --iteration N"""

    def torch_device(self):
        """The torch device; ``cuda`` without CUDA is a ``ValueError``."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for but CUDA is not available "
                             "(install a CUDA build of torch, or use --device cpu)")
        return torch.device(self.device)


def _methods(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [m.strip() for m in value.split(",") if m.strip()]
    return tuple(value) if isinstance(value, (list, tuple)) else value


METHOD_LIST = Check(tuple, lambda v: len(v) > 0 and all(m in METHODS for m in v),
                    "a comma-separated list of " + ", ".join(METHODS), parser=_methods)


@dataclass(frozen=True)
class EvalConfig(Section):
    """How ``meta-rl evaluate`` measures fast adaptation (``meta_rl.evaluation``).

    A run keeps these in its config as the protocol it is evaluated with by default. Step ``k``
    of ``K`` (counting from 1) takes an inner step of ``inner_lr * s_k``: ``s_1 = 1`` and
    ``s_k = later_lr_scale * later_lr_decay ** (k - 2)`` for ``k >= 2``
    (``meta_rl.inner.step_scales``).
    """

    tasks: int = setting(40, POSITIVE_INT)
    """held-out tasks"""
    split: str = setting("test", one_of("train", "test"))
    """the family's split the tasks come from: test (held out) or train (the papers'
    "meta-train" column); families without a fixed split draw both from one distribution,
    held out by seed"""
    steps: int = setting(3, COUNT)
    """adaptation steps K"""
    episodes: int = setting(20, POSITIVE_INT)
    """episodes per task for every adaptation step and measurement"""
    seed: int | None = setting(None, OPTIONAL_COUNT)
    """evaluation seed (default: the run's; the held-out tasks never come from a training seed)"""
    methods: tuple[str, ...] = setting(METHODS, METHOD_LIST)
    """methods to run: meta, random, pretrained, ppo"""
    ppo_tasks: int | None = setting(None, OPTIONAL_POSITIVE_INT)
    """run the PPO baseline on the first N held-out tasks only (it is the slow one; default all)"""
    later_lr_scale: float = setting(1.0, POSITIVE)
    """step size of step 2, relative to step 1 (the MAML paper's evaluation halves it: 0.5)"""
    later_lr_decay: float = setting(1.0, POSITIVE)
    """factor applied again at each step after the second (1: every later step at
    later_lr_scale)"""
    later_kl: float | None = setting(0.25, OPTIONAL_POSITIVE)
    """bound each step after the trained ones (all after the first, for the baselines) to move
    a task's policy no further, in KL, than this times that task's own first step did (null:
    the plain step, the paper's)"""
    baseline_lrs: tuple[float, ...] = setting((0.1, 0.3, 1.0, 3.0), Check(
        tuple, lambda v: len(v) > 0 and all(isinstance(x, (int, float)) and x > 0 for x in v),
        "a list of positive numbers like 0.1,0.3,1,3",
        parser=lambda t: tuple(float(x) for x in t.split(","))))
    """the inner step sizes the random-init and pretrained baselines choose from, as multiples
    of the run's inner_lr, by their mean return over steps 1..K on validation tasks"""
    validation_tasks: int = setting(20, POSITIVE_INT)
    """tasks the baselines choose their step size on (other tasks than the reported ones)"""
    batch_unit: str | None = setting(None, one_of(*BATCH_UNITS, optional=True))
    """count a batch in episodes or in env steps, E x horizon per task (default: the run's)"""

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", _methods(self.methods))
        super().__post_init__()
        ordered = tuple(m for m in METHODS if m in self.methods)
        object.__setattr__(self, "methods", ordered)


# -- the tree --------------------------------------------------------------------------------------

SECTIONS: dict[str, type[Section]] = {
    "policy": PolicyConfig, "sampling": SamplingConfig, "returns": ReturnsConfig,
    "inner": InnerConfig, "optim": OptimConfig, "trpo": TRPOConfig, "run": RunConfig,
    "eval": EvalConfig,
}
#: sections that describe how a run executes or is evaluated, not what it trains
NOT_TRAINING = ("run", "eval")


def _section(cls):
    return field(default_factory=cls, metadata={"section": True})


@dataclass(frozen=True)
class TrainConfig(Section):
    """A meta-training run: the task family, the algorithm (inner rule + outer step), and the
    sections below. ``TrainConfig.from_dict`` builds one from a (flat or nested) mapping."""

    env: str = setting("Navigation2D", NAME, flag_keys=())
    """registered family name, or module:Class for a family of your own"""
    env_kwargs: dict = setting({}, MAPPING, flag_keys=("horizon", "frame_skip"))
    """keyword arguments of the family's constructor, e.g. horizon=100,frame_skip=1"""
    algo: str = setting("maml", one_of(*ALGORITHMS))
    """meta-learning algorithm: maml, metasgd or reptile"""
    outer: str | None = setting(None, one_of("trpo", "adam", "sgd", optional=True))
    """outer step: trpo or adam (maml, metasgd; default trpo), sgd or adam (reptile; default
    sgd)"""
    iterations: int = setting(100, POSITIVE_INT)
    """meta-iterations"""
    seed: int = setting(0, COUNT)
    """seed of the tasks, the initial parameters and the sampling"""
    policy: PolicyConfig = _section(PolicyConfig)
    sampling: SamplingConfig = _section(SamplingConfig)
    returns: ReturnsConfig = _section(ReturnsConfig)
    inner: InnerConfig = _section(InnerConfig)
    optim: OptimConfig = _section(OptimConfig)
    trpo: TRPOConfig = _section(TRPOConfig)
    run: RunConfig = _section(RunConfig)
    eval: EvalConfig = _section(EvalConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        super().__post_init__()
        allowed = ALGORITHMS[self.algo]
        if self.outer is not None and self.outer not in allowed:
            raise ValueError(f"outer {self.outer!r} does not fit algo {self.algo!r}; choose "
                             f"{' or '.join(allowed)}")
        if self.optim.rate_lr is not None and self.algo != "metasgd":
            raise ValueError(f"rate_lr is for algo metasgd (its learned inner rates); algo "
                             f"{self.algo!r} has none, so leave rate_lr unset")
        if self.algo == "reptile" and self.inner.inner_steps < 1:
            raise ValueError("reptile needs inner_steps >= 1 (its update is theta' - theta)")
        if self.algo == "metasgd" and self.inner.inner_steps < 1:
            raise ValueError("metasgd needs inner_steps >= 1 (its learned rates act only in the "
                             "inner loop); use algo maml for inner_steps 0")

    # -- derived -----------------------------------------------------------------------------------
    @property
    def outer_name(self) -> str:
        """The outer step: ``outer``, or the algorithm's default."""
        return self.outer or ALGORITHMS[self.algo][0]

    @property
    def outer_lr(self) -> float:
        """Adam's learning rate or Reptile's epsilon: ``optim.outer_lr`` or its default."""
        if self.optim.outer_lr is not None:
            return self.optim.outer_lr
        return 1.0 if self.outer_name == "sgd" else 1e-3

    @property
    def first_order(self) -> bool:
        """Whether meta-gradients skip second-order terms (always, for Reptile)."""
        return self.inner.first_order or self.algo == "reptile"

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data, by section (what ``config.yaml`` holds)."""
        def plain(value):
            return list(value) if isinstance(value, tuple) else value

        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("section"):
                out[f.name] = {g.name: plain(getattr(value, g.name)) for g in fields(value)}
            else:
                out[f.name] = plain(value)
        return out

    def experiment(self) -> dict[str, Any]:
        """:meth:`to_dict` without the sections that do not change what is trained: two
        configs with the same experiment train the same model (on one device)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_TRAINING}

    @classmethod
    def from_dict(cls, data: Any, base: TrainConfig | None = None) -> TrainConfig:
        """A config from a mapping, on top of ``base`` (default: the defaults).

        Training settings may be flat or by section; evaluation settings go under ``eval``.
        An unknown key is a ``ValueError`` that lists the known ones.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a config must be a mapping of keys to values, got "
                             f"{type(data).__name__}")
        base = base or cls()
        top = {f.name for f in fields(cls) if not f.metadata.get("section")}
        changes: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        unknown = []
        for key, value in data.items():
            if key in SECTIONS:
                if value is None:
                    continue
                if not isinstance(value, dict):
                    raise ValueError(f"{key} must be a mapping of its settings, got {value!r}")
                known = {f.name for f in fields(SECTIONS[key])}
                unknown += [f"{key}.{k}" for k in value if k not in known]
                sections.setdefault(key, {}).update(value)
            elif key in top:
                changes[key] = value
            elif key in _flat_index():
                sections.setdefault(_flat_index()[key], {})[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(sorted(unknown))}; known keys: "
                             f"{', '.join(known_keys())}")
        if changes.get("env_kwargs", {}) is None:
            changes["env_kwargs"] = {}
        for name, values in sections.items():
            if "hidden" in values:
                values["hidden"] = parse_hidden(values["hidden"])
            changes[name] = dataclasses.replace(getattr(base, name), **values)
        return dataclasses.replace(base, **changes)

    def replace(self, **settings: Any) -> TrainConfig:
        """A copy with ``settings`` changed, given by their names (flat or by section)."""
        return self.from_dict(settings, base=self)


@functools.cache
def _flat_index() -> dict[str, str]:
    """Training setting name -> its section (names are unique across these sections)."""
    index: dict[str, str] = {}
    for name, cls in SECTIONS.items():
        if name == "eval":
            continue
        for f in fields(cls):
            if f.name in index:
                raise AssertionError(f"setting {f.name} is in two sections")
            index[f.name] = name
    return index


def known_keys() -> list[str]:
    """Every key :meth:`TrainConfig.from_dict` knows: top-level, flat training settings, and
    ``eval.<setting>``."""
    top = [f.name for f in fields(TrainConfig) if not f.metadata.get("section")]
    return [*top, *_flat_index(), *(f"eval.{f.name}" for f in fields(EvalConfig))]


def reference() -> str:
    """Every setting as Markdown, by section: its name, default and docstring
    (``docs/configuration.md``; a test keeps that file equal to this)."""
    import json

    def show(value: Any) -> str:  # as YAML would read it
        return value if isinstance(value, str) else json.dumps(
            list(value) if isinstance(value, tuple) else value)

    lines = ["# Configuration", "",
             "Every setting of a run, by section, with its default. A preset or YAML file gives "
             "training settings flat (`inner_lr: 0.5`) or by section (`inner: {inner_lr: 0.5}`); "
             "`meta-rl train --inner-lr 0.5` sets one from the command line, and "
             "`--eval-<name>` an `eval` setting. This page is generated from "
             "`meta_rl/config.py` (`python -c \"from meta_rl.config import reference; "
             "print(reference())\"`).", ""]
    groups = [("", TrainConfig), *((name, cls) for name, cls in SECTIONS.items())]
    for name, cls in groups:
        doc = " ".join((cls.__doc__ or "").split("\n\n")[0].replace("``", "`").split())
        lines += [f"## {name or 'top level'}", "", doc, "", "| setting | default | meaning |",
                  "|---|---|---|"]
        docs = field_docs(cls)
        for f in fields(cls):
            if f.metadata.get("section"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"| `{f.name}` | `{show(default)}` | {docs.get(f.name, '')} |")
        lines.append("")
    return "\n".join(lines)
