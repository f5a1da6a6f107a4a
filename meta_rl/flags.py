"""Command-line flags made from the config dataclasses, so that no setting is declared twice.

Every field of a section becomes ``--field-name``: its type and check come from the field's
:class:`~meta_rl.config.Check`, its help from the field's docstring, and the help shows its
default. A flag that is not given is ``None`` in the parsed namespace, so a preset or a run's
saved config keeps its value; :func:`given` collects the flags that were given, as a mapping
:meth:`~meta_rl.config.TrainConfig.from_dict` reads. A dict field with ``flag_keys`` (``env_kwargs``)
also gets one flag per key (``--horizon``, ``--frame-skip``).
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from meta_rl.config import POSITIVE_INT, Check, field_docs

#: prefix of the namespace attributes of the flags this module adds
_DEST = "cfg__"


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return "none" if value is None else str(value)


def _type(name: str, check: Check):
    def parse(text: str):
        try:
            return check(name, check.parse(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.kind.__name__  # argparse names the type in some messages
    return parse


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def add_flags(parser: argparse.ArgumentParser, cls: type, path: str = "",
              default_note: str = "default", prefix: str = "",
              skip: tuple[str, ...] = ()) -> None:
    """Add a flag ``--<prefix><field-name>`` for every checked field of dataclass ``cls`` but
    those in ``skip``; ``path`` is where ``cls`` sits in the config (``"inner"``, or ``""`` for
    top-level fields), and ``default_note`` words the shown default."""
    docs = field_docs(cls)
    for f in fields(cls):
        check = f.metadata.get("check")
        if check is None or f.name in skip:
            continue
        dest = f"{_DEST}{path}.{f.name}" if path else f"{_DEST}{f.name}"
        default = _default(f)  # None: the docstring says what happens by default
        help_text = docs.get(f.name, f.name) + (
            "" if default is None else f" ({default_note}: {_show(default)})")
        flag = "--" + prefix + f.name.replace("_", "-")
        if check.kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=dest, type=_type(f.name, check), default=None,
                                choices=check.choices or None, help=help_text,
                                metavar=None if check.choices else f.name.upper())
        for key in f.metadata.get("flag_keys", ()):
            parser.add_argument("--" + key.replace("_", "-"), dest=f"{dest}:{key}",
                                type=_type(key, POSITIVE_INT), default=None, metavar=key.upper(),
                                help=f"sets {key} in {f.name} (default: the family's)")


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags that were given, as a nested mapping (``{"inner": {"inner_lr": 0.5}}``,
    ``{"env_kwargs": {"horizon": 50}}``)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST) or value is None:
            continue
        where, _, key = dest[len(_DEST):].partition(":")
        *sections, name = where.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        if key:
            node.setdefault(name, {})[key] = value
        else:
            node[name] = value
    return out


def settings(mapping: dict[str, Any]) -> dict[str, Any]:
    """The settings in ``mapping`` (as :func:`given` returns it) by name, flat: each section's
    settings, each key of ``env_kwargs`` (``frame_skip``), and the rest; ``eval`` settings as
    ``eval.<name>``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key == "eval":
            flat.update({f"eval.{k}": v for k, v in value.items()})
        elif isinstance(value, dict) and key != "env_kwargs":
            flat.update(value)
        elif isinstance(value, dict):
            flat.update(value or {key: value})
        else:
            flat[key] = value
    return flat
