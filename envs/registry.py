"""Family registry: ``make(name)``, ``register(name, cls)``, ``names()``, and Gymnasium ids.

A family is looked up by its registered name, or given as ``"package.module:ClassName"`` for a
user's own :class:`~envs.base.TaskFamily` subclass, imported on demand (no registration needed).
Every registered family is also a Gymnasium env id, ``"MetaRL/<name>-v0"``, made by
:func:`gym_entry_point`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from typing import Any

import gymnasium as gym

from envs.base import Task, TaskFamily

_FAMILIES: dict[str, type[TaskFamily]] = {}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def gym_id(name: str) -> str:
    """The Gymnasium id of a registered family, ``"MetaRL/<name>-v0"``."""
    return f"MetaRL/{name}-v0"


def names() -> list[str]:
    """Registered family names, sorted."""
    return sorted(_FAMILIES)


def register(name: str, family_class: type[TaskFamily], *, overwrite: bool = False) -> None:
    """Register ``family_class`` under ``name`` for :func:`make` and as ``gymnasium.make``'s
    ``"MetaRL/<name>-v0"``.

    ``name`` is an identifier (letters, digits, underscores). A name already taken is a
    ``ValueError`` unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"a family name must be an identifier (letters, digits, underscores), got {name!r}"
        )
    if not (isinstance(family_class, type) and issubclass(family_class, TaskFamily)):
        raise ValueError(
            f"register({name!r}, ...) needs a TaskFamily subclass, got {family_class!r}; "
            "subclass envs.TaskFamily and implement its abstract methods"
        )
    if inspect.isabstract(family_class):
        missing = ", ".join(sorted(family_class.__abstractmethods__))
        raise ValueError(
            f"{family_class.__name__} cannot be registered: it does not implement {missing}"
        )
    if name in _FAMILIES and not overwrite:
        raise ValueError(
            f"a family named {name!r} is already registered ({_FAMILIES[name].__qualname__}); "
            "choose another name or pass overwrite=True"
        )
    _FAMILIES[name] = family_class
    gym.registry.pop(gym_id(name), None)  # re-registering is not an error here
    gym.register(id=gym_id(name), entry_point=gym_entry_point, kwargs={"family": name})


def unregister(name: str) -> None:
    """Remove a registered family (and its Gymnasium id); an unknown name is a ``ValueError``."""
    if name not in _FAMILIES:
        raise ValueError(f"no family named {name!r} is registered; known: {', '.join(names())}")
    del _FAMILIES[name]
    gym.registry.pop(gym_id(name), None)


def _import_family(path: str) -> type[TaskFamily]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a family path must look like 'package.module:ClassName', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for family {path!r}: {exc}") from exc
    try:
        obj = functools.reduce(getattr, attr.split("."), module)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from exc
    if not (isinstance(obj, type) and issubclass(obj, TaskFamily)):
        raise ValueError(f"{path!r} is {obj!r}, not a TaskFamily subclass")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ValueError(f"{path!r} is abstract: it does not implement {missing}")
    return obj


def family_class(name: str) -> type[TaskFamily]:
    """The class registered as ``name``, or imported from ``"package.module:ClassName"``."""
    if not isinstance(name, str):
        raise ValueError(f"a family name must be a string, got {name!r}")
    if name in _FAMILIES:
        return _FAMILIES[name]
    if ":" in name:
        return _import_family(name)
    raise ValueError(
        f"unknown task family {name!r}; known families: {', '.join(names())} "
        "(or give your own as 'package.module:ClassName')"
    )


def make(name: str, **kwargs: Any) -> TaskFamily:
    """An instance of the family ``name`` (registered, or ``"package.module:ClassName"``),
    constructed with ``kwargs`` (e.g. ``horizon=50``)."""
    cls = family_class(name)
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ValueError(
            f"{name} does not accept the arguments {sorted(kwargs)}: {exc} "
            f"(its signature is {cls.__name__}{inspect.signature(cls)})"
        ) from exc
    return cls(**kwargs)


def gym_entry_point(
    family: str, task: Task | dict[str, Any] | None = None, **family_kwargs: Any
) -> gym.Env:
    """``gymnasium.make("MetaRL/<family>-v0", task=...)``: the family's env for ``task`` (a
    ``Task``, or its ``to_json()`` dict; ``None`` takes ``sample_tasks(1, seed=0)[0]``)."""
    fam = make(family, **family_kwargs)
    if task is None:
        task = fam.sample_tasks(1, seed=0)[0]
    elif isinstance(task, dict):
        task = fam.task_from_json(task)
    return fam.make_env(fam.check_task(task))
