"""Reading the corpora's line-oriented files: lines of strict UTF-8 and strict integers."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

from fabula.data.errors import DataFormatError

#: The range of a 64-bit integer, the ids and counts a reader accepts.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ASCII_INTEGER = re.compile(r"-?[0-9]+")
_MAX_DIGITS = 20  # longer numbers lie outside every range a reader checks (64-bit integers have 19 digits)


def numbered_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file, from 1, with the line ends of text mode (``\\n``,
    ``\\r\\n`` and ``\\r``). A byte-order mark opening the file is its signature, not text, and
    is left out. A missing file is a :class:`DataFormatError` saying ``"<what> not found"``; bytes
    that are not UTF-8 are one naming their line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, f"{what} not found")
    n = 0
    with path.open("rb") as f:
        for k, raw in enumerate(f):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:  # each \r before the bad bytes ended a line
                where = n + 1 + raw.count(b"\r", 0, e.start)
                raise DataFormatError(
                    path, f"invalid UTF-8 ({e.reason}: {raw[e.start : e.end]!r})", where
                ) from None
            if k == 0:
                text = text.removeprefix("\ufeff")
                if not text:  # the file holds the mark alone
                    return
            for line in io.StringIO(text, newline=None) if "\r" in text else (text,):
                n += 1
                yield n, line


def read_int(
    text: str, low: int, high: int, path: str | Path, line: int, what: str, context: str = "", note: str = ""
) -> int:
    """``text`` as an integer in ``low..high``, else a :class:`DataFormatError` at ``path``,
    ``line`` that names it as ``what`` followed by ``context`` (e.g. ``" in '3:7'"``) and, when
    out of range, by ``note``.

    Only ASCII digits after an optional ``-`` are integers: ``int`` alone would also take ``+``,
    ``_``, surrounding spaces and other scripts' digits (``'٣'``), and ``str.isdigit`` takes
    ``'²'``, which ``int`` refuses.
    """
    if _ASCII_INTEGER.fullmatch(text) is None:
        raise DataFormatError(path, f"{what} {abbreviate(text)!r}{context} is not an integer", line)
    if len(text.lstrip("-").lstrip("0")) > _MAX_DIGITS or not low <= int(text) <= high:
        raise DataFormatError(
            path, f"{what} {abbreviate(text)}{context} out of range {low}..{high}{note}", line
        )
    return int(text)


def abbreviate(text: str, limit: int = 40) -> str:
    """``text`` for a message: whole, or its start and length when longer than ``limit``."""
    return text if len(text) <= limit else f"{text[: limit // 2]}... ({len(text)} characters)"
