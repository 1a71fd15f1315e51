"""The one grammar of inference specs, parsed here and nowhere else.

A spec is ``NAME`` or ``NAME:OPTIONS``; ``OPTIONS`` is a comma-separated list of ``key=value``
items, the first of which may be a bare value for the kind's leading option (``rws:5`` is
``rws:k=5``, ``svi:20`` is ``svi:steps=20``)::

    rws:k=5,insomnia=0.5    nvil:hidden=200/100,decay=0.9    aggressive:inner=50
    svi:steps=20,lr=1       sa-vae:10,hvp=finite-difference   nuts:chains=4,backend=numpyro

A value is read by its option's annotated type: integers, finite floats, ``true``/``false``,
``none`` for an option that may be unset, ``/``-separated integers for a tuple (layer sizes).
The kind's options class (a frozen dataclass) checks ranges and choices when built.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields

from fabula.errors import SettingsError
from fabula.settings import base_type


@dataclass(frozen=True)
class Spec:
    """A parsed spec: the kind's ``name``, an optional leading bare value, and ``key=value`` items."""

    name: str
    leading: str | None
    named: dict[str, str]


def split(text: str) -> Spec:
    """``text`` cut into name, leading value and named items (values not yet read).

    >>> from fabula.inference.spec import split
    >>> split("rws:5,insomnia=0.5")
    Spec(name='rws', leading='5', named={'insomnia': '0.5'})
    >>> split("nvil:hidden=200/100,decay=0.9").named
    {'hidden': '200/100', 'decay': '0.9'}
    >>> split("svi:steps=20,5")
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: 'svi:steps=20,5': only the first option may be given without its name
    """
    name, colon, rest = text.strip().partition(":")
    if not name:
        raise SettingsError(f"{text!r}: a spec starts with the inference kind's name")
    if colon and not rest:
        raise SettingsError(f"{text!r}: nothing after ':' (give options, e.g. {name}:key=value)")
    leading, named = None, {}
    for i, item in enumerate(rest.split(",") if rest else []):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            if i:
                raise SettingsError(f"{text!r}: only the first option may be given without its name")
            leading = key
            continue
        if not key or not value:
            raise SettingsError(f"{text!r}: {item!r} is not key=value")
        if key in named:
            raise SettingsError(f"{text!r}: option {key!r} given twice")
        named[key] = value
    return Spec(name, leading, named)


def _read(kind: type, optional: bool, many: bool, text: str, where: str):
    if optional and text.lower() == "none":
        return None
    if many:
        return tuple(_read(kind, False, False, part, where) for part in text.split("/"))
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise SettingsError(f"{where}: expected true or false, got {text!r}")
        return text.lower() == "true"
    if kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            raise SettingsError(
                f"{where}: expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if not math.isfinite(value):
            raise SettingsError(f"{where}: expected a finite number, got {text!r}")
        return value
    return text


def read_options(options: type, leading_option: str | None, spec: Spec, text: str, what: str = "inference"):
    """An instance of the frozen dataclass ``options`` from ``spec``'s values (the leading bare
    value is ``leading_option``); unknown names and values the class refuses are
    :class:`~fabula.errors.SettingsError` naming the spec and ``what`` it names."""
    known = {f.name: f for f in fields(options)}
    values = dict(spec.named)
    if spec.leading is not None:
        if leading_option is None:
            raise SettingsError(f"{text!r}: {what} {spec.name!r} takes no bare value; write key=value")
        if leading_option in values:
            raise SettingsError(f"{text!r}: option {leading_option!r} given twice")
        values[leading_option] = spec.leading
    unknown = sorted(set(values) - set(known))
    if unknown:
        have = ", ".join(known) or "none"
        raise SettingsError(
            f"{text!r}: {what} {spec.name!r} has no option {unknown[0]!r} (its options: {have})"
        )
    hints = typing.get_type_hints(options)
    read = {}
    for key, value in values.items():
        kind, optional, many = base_type(hints[key])
        read[key] = _read(
            kind, optional, many, value, f"{text!r}: option {key} ({known[key].metadata['help']})"
        )
        choices = known[key].metadata.get("choices")
        if choices and read[key] not in choices:
            raise SettingsError(f"{text!r}: option {key} must be one of {', '.join(choices)}, got {value!r}")
    try:
        return options(**read)
    except SettingsError as e:
        raise SettingsError(f"{text!r}: {e}") from None


def write(value) -> str:
    """A value as a spec writes it (the inverse of the reading above)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return "/".join(map(str, value))
    return str(value)


def describe(options: type, leading_option: str | None) -> str:
    """The options of a kind for help texts: ``k (draws of q per datum, >= 1; default 5), ...``."""
    parts = []
    hints = typing.get_type_hints(options)
    for f in fields(options):
        kind = base_type(hints[f.name])[0]
        within = str(f.metadata.get("within") or "") if kind in (int, float) else ""
        choices = "|".join(f.metadata.get("choices") or ())
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = write(default) if default is not None else f.metadata.get("unset", "none")
        detail = "; ".join(p for p in (within, choices, f"default {shown}") if p)
        mark = "[leading] " if f.name == leading_option else ""
        parts.append(f"{mark}{f.name} ({f.metadata['help']}; {detail})")
    return ", ".join(parts)
