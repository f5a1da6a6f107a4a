"""Shipped presets and YAML config files: find one, read it, lay command-line flags over it.

A preset is ``meta_rl/presets/<name>.yaml``, a mapping that
:meth:`~meta_rl.config.TrainConfig.from_dict` reads. Precedence: defaults < preset or YAML file <
flags.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from meta_rl.config import TrainConfig


def preset_names() -> list[str]:
    """Names of the shipped presets (``meta_rl/presets/*.yaml`` without the suffix)."""
    folder = resources.files("meta_rl") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_yaml_config(source: str) -> dict[str, Any]:
    """A config mapping from a YAML file path or a preset name; a ``ValueError`` for anything
    else that says what to give instead."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ValueError(f"config file {source} does not exist (give a YAML path or one of "
                             f"the presets: {', '.join(preset_names())})")
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read config file {source}: {exc.strerror}") from None
    elif source in preset_names():
        text = (resources.files("meta_rl") / "presets" / f"{source}.yaml").read_text()
    else:
        raise ValueError(f"unknown preset {source!r}; presets: {', '.join(preset_names())} "
                         "(or give a path to a .yaml file)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"config {source} is not valid YAML{where}: "
                         f"{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config {source} must be a mapping of keys to values, "
                         f"got a {type(data).__name__}")
    return data


def resolve(source: str | None, flags: dict[str, Any]) -> TrainConfig:
    """The config of preset or YAML file ``source`` (none: the defaults) with ``flags`` (a
    mapping as :func:`meta_rl.flags.given` returns it) laid over it; ``env_kwargs`` flags add to
    the file's rather than replace them."""
    config = TrainConfig.from_dict(load_yaml_config(source)) if source else TrainConfig()
    if "env_kwargs" in flags:
        flags = {**flags, "env_kwargs": {**config.env_kwargs, **flags["env_kwargs"]}}
    return config.from_dict(flags, base=config)
