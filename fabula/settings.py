"""Settings defined once: dataclasses whose fields carry their help text, validated by
``__post_init__`` (or by the constructor they feed), from which the ``fabula`` command's flags
are generated -- so a flag, its default, its help and the saved configuration cannot drift.

A field ``learning_rate: float = setting(1e-3, "step size")`` becomes ``--learning-rate`` with
help ``"step size (default: 0.001)"``; booleans become ``--name/--no-name``; ``tuple[int, ...]``
fields take several values; ``X | None`` fields take ``none`` to unset them (a recipe's free
bits, say). A numeric field is finite and within its :class:`Range` (``within=POSITIVE``, say),
checked by :func:`check_ranges` in the class's ``__post_init__``; a flag defined outside the
settings classes reads its value with :func:`number`, so that a bad value is refused when parsed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields

from fabula.errors import SettingsError


@dataclass(frozen=True)
class Range:
    """The numbers a setting accepts: finite, at least / above a lower bound and at most / below
    an upper bound where these are given."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None

    def __str__(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``, ...; empty where only finiteness is asked."""
        low = ("[", ">=", self.at_least) if self.at_least is not None else ("(", ">", self.above)
        high = ("]", "<=", self.at_most) if self.at_most is not None else (")", "<", self.below)
        if low[2] is not None and high[2] is not None:
            return f"in {low[0]}{low[2]}, {high[2]}{high[0]}"
        bound = low if low[2] is not None else high if high[2] is not None else None
        return f"{bound[1]} {bound[2]}" if bound else ""

    def complaint(self, value, kind: type = float) -> str | None:
        """Why ``value`` is not a ``kind`` (``int`` or ``float``) in this range, or ``None``."""
        number = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if (
            number
            and not isinstance(value, bool)
            and math.isfinite(value)
            and (self.at_least is None or value >= self.at_least)
            and (self.above is None or value > self.above)
            and (self.at_most is None or value <= self.at_most)
            and (self.below is None or value < self.below)
        ):
            return None
        what = "an integer" if kind is int else "a finite number"
        return f"must be {what} {self}".rstrip() + f", got {value!r}"

    def check(self, name: str, value, kind: type = float) -> None:
        """Raise :class:`~fabula.errors.SettingsError` naming ``name`` unless ``value`` is in range."""
        complaint = self.complaint(value, kind)
        if complaint:
            raise SettingsError(f"{name} {complaint}")


ANY = Range()
COUNT = Range(at_least=1)
NONNEGATIVE = Range(at_least=0)
POSITIVE = Range(above=0)
PROBABILITY = Range(at_least=0, at_most=1)
SEED = Range(at_least=0, at_most=2**32 - 1)  # what torch, NumPy and Python's random all accept


def setting(default, help: str, *, choices=None, within: Range = ANY):
    """A settings field with its default, help text and (optionally) the values it accepts:
    ``choices`` for a string, ``within`` for a number (of a tuple: for each)."""
    metadata = {"help": help, "choices": choices, "within": within}
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


def add_arguments(
    parser: argparse.ArgumentParser,
    cls,
    prefix: str,
    defaults: dict | None = None,
    only: tuple[str, ...] | None = None,
) -> None:
    """Add a flag for every field of settings class ``cls`` (or for the fields named in ``only``);
    values land at ``{prefix}.{name}`` in the namespace. ``defaults`` overrides field defaults (a
    recipe's own)."""
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(only or ()) - {f.name for f in fields(cls)})
    if unknown:
        raise SettingsError(f"no {cls.__name__} settings {unknown}")
    group = parser.add_argument_group(cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        default = (defaults or {}).get(f.name, _default(f))
        kind, optional, many = _base_type(hints[f.name])
        shown = "none" if default is None else (" ".join(map(str, default)) if many else default)
        within = f", {f.metadata['within']}" if kind in (int, float) and str(f.metadata["within"]) else ""
        unset = " ('none' unsets it)" if optional else ""
        kwargs = {
            "dest": f"{prefix}.{f.name}",
            "default": default,
            "help": f"{f.metadata['help']}{within}{unset} (default: {shown})",
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


def number(kind: type, within: Range = ANY):
    """An argparse ``type`` reading a ``kind`` (``int`` or ``float``) in range ``within``: for the
    flags defined outside the settings classes, so that a bad value is refused when parsed."""

    def read(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        complaint = within.complaint(value, kind)
        if complaint:
            raise argparse.ArgumentTypeError(complaint)
        return value

    read.__name__ = kind.__name__
    return read


def check_ranges(settings) -> None:
    """Check every numeric field of a settings object against its range (each value of a
    tuple; ``None`` where the field is optional), naming its flag in the error."""
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        kind, optional, many = _base_type(hints[f.name])
        value = getattr(settings, f.name)
        if kind not in (int, float) or (optional and value is None):
            continue
        for v in value if many else (value,):
            f.metadata["within"].check(flag(f.name), v, kind)


def _default(f):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def from_arguments(cls, args: argparse.Namespace, prefix: str):
    """The settings of ``cls`` read back from a namespace filled by :func:`add_arguments` (fields
    without a flag keep their defaults)."""
    flagged = [f.name for f in fields(cls) if hasattr(args, f"{prefix}.{f.name}")]
    values = {name: getattr(args, f"{prefix}.{name}") for name in flagged}
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
