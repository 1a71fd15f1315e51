"""Command-line flags generated from the settings declarations (:mod:`fabula.settings`).

A field ``learning_rate: float = setting(1e-3, "step size")`` becomes ``--learning-rate`` with
help ``"step size (default: 0.001)"``; booleans become ``--name/--no-name``; ``tuple[int, ...]``
fields take several values; ``X | None`` fields take ``none`` to unset them (a recipe's free
bits, say). A flag defined outside the settings classes reads its value with :func:`number`, so
that a bad value is refused when parsed.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, fields

from fabula.errors import SettingsError
from fabula.settings import ANY, Range, base_type, default_of, flag, from_dict


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
        kind, optional, many = base_type(hints[f.name])
        range_ = f.metadata.get("within", ANY)
        within = f", {range_}" if kind in (int, float) and str(range_) else ""
        unset = " ('none' unsets it)" if optional else ""
        kwargs = {"dest": f"{prefix}.{f.name}"}
        if f.name not in (defaults or {}) and f.default is MISSING and f.default_factory is MISSING:
            kwargs.update(required=True, help=f"{f.metadata.get('help', f.name)}{within}{unset} (required)")
        else:
            default = (defaults or {}).get(f.name, default_of(f))
            shown = "none" if default is None else (" ".join(map(str, default)) if many else default)
            kwargs.update(
                default=default, help=f"{f.metadata.get('help', f.name)}{within}{unset} (default: {shown})"
            )
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


def from_arguments(cls, args: argparse.Namespace, prefix: str):
    """The settings of ``cls`` read back from a namespace filled by :func:`add_arguments` (fields
    without a flag keep their defaults)."""
    flagged = [f.name for f in fields(cls) if hasattr(args, f"{prefix}.{f.name}")]
    values = {name: getattr(args, f"{prefix}.{name}") for name in flagged}
    return from_dict(cls, values)
