"""Reading the corpora's line-oriented files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fabula.data.errors import DataFormatError


def numbered_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file, from 1; a missing file is a
    :class:`DataFormatError` saying ``"<what> not found"``."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, f"{what} not found")
    with path.open(encoding="utf-8") as f:
        yield from enumerate(f, 1)
