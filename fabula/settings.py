"""Settings defined once: dataclasses whose fields carry their help text, validated by
``__post_init__`` (or by the constructor they feed), from which the ``fabula`` command's flags
are generated -- so a flag, its default, its help and the saved configuration cannot drift.

A field ``learning_rate: float = setting(1e-3, "step size")`` becomes ``--learning-rate`` with
help ``"step size (default: 0.001)"``; booleans become ``--name/--no-name``; ``tuple[int, ...]``
fields take several values; ``X | None`` fields take ``none`` to unset them (a recipe's free
bits, say).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import field, fields

from fabula.errors import SettingsError


def setting(default, help: str, *, choices=None):
    """A settings field with its default, help text and (optionally) the values it accepts."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _base_type(hint):
    """``(type, optional, many)`` of a field's annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls, prefix: str, defaults: dict | None = None) -> None:
    """Add a flag for every field of settings class ``cls``; values land at ``{prefix}.{name}``
    in the namespace. ``defaults`` overrides field defaults (a recipe's own)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__)
    for f in fields(cls):
        default = (defaults or {}).get(f.name, _default(f))
        kind, optional, many = _base_type(hints[f.name])
        shown = "none" if default is None else (" ".join(map(str, default)) if many else default)
        unset = " ('none' unsets it)" if optional else ""
        kwargs = {
            "dest": f"{prefix}.{f.name}",
            "default": default,
            "help": f"{f.metadata['help']}{unset} (default: {shown})",
        }
        if optional:
            kind = _or_none(kind)
        if kind is bool:
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
            group.add_argument(flag(f.name), type=kind, **kwargs)
            continue
        metavar = f.name.upper()
        group.add_argument(flag(f.name), type=kind, nargs="*" if many else None, metavar=metavar, **kwargs)


def _or_none(kind):
    """``kind`` of a flag's value, or ``None`` for the word ``none``."""

    def read(text: str):
        return None if text.lower() == "none" else kind(text)

    read.__name__ = kind.__name__  # argparse names the type in its error messages
    return read


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def from_arguments(cls, args: argparse.Namespace, prefix: str):
    """The settings of ``cls`` read back from a namespace filled by :func:`add_arguments`."""
    values = {f.name: getattr(args, f"{prefix}.{f.name}") for f in fields(cls)}
    return from_dict(cls, values)


def from_dict(cls, values: dict):
    """``cls(**values)`` with lists turned back into tuples, refusing unknown names."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    converted = {}
    for name, value in values.items():
        many = _base_type(hints[name])[2]
        converted[name] = tuple(value) if many and value is not None else value
    return cls(**converted)


def to_dict(settings) -> dict:
    """JSON-ready values of a settings object (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
