"""Settings declared once, beside the constructor they feed: dataclasses whose fields carry their
help text and the values they accept, validated by ``__post_init__``.

A field ``learning_rate: float = setting(1e-3, "step size", within=POSITIVE)`` is finite and
within its :class:`Range`, checked by :func:`check_ranges`. The library declares settings this
way and never reads a command line: the run layer generates the ``fabula`` command's flags from
these declarations (:mod:`fabula.run.flags`) and the inference specs' options are read by
:mod:`fabula.inference.spec`, so a flag, its default, its help and the saved configuration cannot
drift.
"""

from __future__ import annotations

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


#: Any finite number.
ANY = Range()
#: An integer count: at least 1.
COUNT = Range(at_least=1)
#: At least 0.
NONNEGATIVE = Range(at_least=0)
#: Above 0.
POSITIVE = Range(above=0)
#: In [0, 1].
PROBABILITY = Range(at_least=0, at_most=1)
#: A random seed: what torch, NumPy and Python's random all accept.
SEED = Range(at_least=0, at_most=2**32 - 1)


def setting(default, help: str, *, choices=None, within: Range = ANY, unset: str | None = None):
    """A settings field with its default, help text and (optionally) the values it accepts:
    ``choices`` for a string, ``within`` for a number (of a tuple: for each); ``unset`` says what
    ``None`` means where that is the default (``"the run's --refinement-lr"``).

    >>> from dataclasses import dataclass, fields
    >>> from fabula.settings import COUNT, Range, check_ranges, setting
    >>> @dataclass(frozen=True)
    ... class Inner:
    ...     steps: int = setting(10, "inner steps", within=COUNT)
    ...     rate: float = setting(0.5, "share kept", within=Range(above=0, at_most=1))
    ...
    ...     def __post_init__(self):
    ...         check_ranges(self)
    >>> Inner(steps=5)
    Inner(steps=5, rate=0.5)
    >>> [(f.name, f.metadata["help"], str(f.metadata["within"])) for f in fields(Inner)]
    [('steps', 'inner steps', '>= 1'), ('rate', 'share kept', 'in (0, 1]')]
    >>> Inner(rate=0)
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: --rate must be a finite number in (0, 1], got 0
    """
    metadata = {"help": help, "choices": choices, "within": within, "unset": unset}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def base_type(hint):
    """``(type, optional, many)`` of a field's annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def flag(name: str) -> str:
    """The command-line flag of setting ``name``."""
    return "--" + name.replace("_", "-")


def check_ranges(settings, naming=flag) -> None:
    """Check every numeric field of a settings object against its range (each value of a
    tuple; ``None`` where the field is optional), naming it in the error as ``naming(name)``
    (its flag by default; an inference spec's options by their own names)."""
    hints = typing.get_type_hints(type(settings))
    for f in fields(settings):
        kind, optional, many = base_type(hints[f.name])
        value = getattr(settings, f.name)
        if kind not in (int, float) or (optional and value is None):
            continue
        for v in value if many else (value,):
            f.metadata["within"].check(naming(f.name), v, kind)


def check_options(options) -> None:
    """Each option of a spec's options class in its range, named with what it is
    (``steps (refinement steps K)``), as a spec names it rather than as a flag."""
    helps = {f.name: f.metadata["help"] for f in fields(options)}
    check_ranges(options, naming=lambda name: f"{name} ({helps[name]})")


def default_of(f):
    """A dataclass field's default value."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def from_dict(cls, values: dict):
    """``cls(**values)`` with lists turned back into tuples, refusing unknown names."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    converted = {}
    for name, value in values.items():
        many = base_type(hints[name])[2]
        converted[name] = tuple(value) if many and value is not None else value
    return cls(**converted)


def to_dict(settings) -> dict:
    """JSON-ready values of a settings object (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}
