"""The one error type raised for bad input data."""

from __future__ import annotations

from pathlib import Path

from fabula.errors import FabulaError


class DataFormatError(FabulaError, ValueError):
    """Malformed or inconsistent input, naming the file, the line (1-based) and the problem."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")
