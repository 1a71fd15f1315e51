"""A comparison's folder (``fabula compare --out DIR``): ``cells.json`` holds every finished
(kind, seed) cell and the generating model's row under the settings that produced them,
rewritten atomically after each cell, so that a comparison stopped at any point (Ctrl-C, a
killed job) and run again with the same ``--out`` and settings computes only what it lacks.
``compare.md`` and ``compare.png`` hold the table and its plot once it is complete.

The file is read as JSON and checked field by field before anything in it is used; a file with
other settings is refused rather than mixed with new cells."""

from __future__ import annotations

import json
import math
from pathlib import Path

from fabula.checkpoint import atomic_write
from fabula.errors import RunError
from fabula.run.compare import AVERAGED, CompareSettings
from fabula.run.config import TrainConfig
from fabula.settings import to_dict


class CompareStore:
    """The finished cells of one comparison, identified by ``identity``: the settings every cell
    shares, as JSON (not the kinds or the number of seeds: a kind or a seed added to a stored
    comparison adds cells to it)."""

    CELLS, TABLE, PLOT = "cells.json", "compare.md", "compare.png"

    def __init__(self, path: str | Path, identity: dict):
        self.path = Path(path)
        self.file = self.path / self.CELLS
        self.identity = json.loads(json.dumps(identity))  # tuples as lists, as read back
        self.cells: dict[tuple[str, int], dict] = {}
        self.reference: dict | None = None
        if self.file.exists():
            self._read()

    @classmethod
    def of(cls, path: str | Path, config: TrainConfig, settings: CompareSettings) -> CompareStore:
        """The store under ``path`` of a comparison of ``config``'s story with ``settings``,
        identified by what its cells share: the configuration but its kind, and the comparison's
        settings but its kinds and number of seeds."""
        shared = config.to_dict()
        shared["inference"].pop("inference")  # each cell has its own kind
        evaluation = {k: v for k, v in to_dict(settings).items() if k not in ("inference", "seeds")}
        return cls(path, {"config": shared, "compare": evaluation})

    def _read(self) -> None:
        try:
            saved = json.loads(self.file.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(
                f"{self.file}: not a comparison's cells ({str(e)[:80]}); remove it or choose another --out"
            ) from None
        if not isinstance(saved, dict) or not isinstance(saved.get("cells"), list) or "settings" not in saved:
            raise RunError(
                f"{self.file}: not a comparison's cells (no settings and cells); choose another --out"
            )
        if saved["settings"] != self.identity:
            changed = _differences(saved["settings"], self.identity)
            raise RunError(
                f"{self.file}: holds a comparison with other settings ({', '.join(changed)} differ); "
                "run it with those or choose another --out"
            )
        for i, cell in enumerate(saved["cells"]):
            self._check_cell(cell, i)
            self.cells[cell["kind"], cell["seed"]] = cell["row"]
        reference = saved.get("reference")
        if reference is not None:
            if not isinstance(reference, dict) or not _number(reference.get("nll")):
                raise RunError(
                    f"{self.file}: the generating model's row has no NLL; remove the file to recompute"
                )
            self.reference = reference

    def _check_cell(self, cell, i: int) -> None:
        def bad(problem: str) -> RunError:
            return RunError(f"{self.file}: cell {i} {problem}; remove the file to recompute")

        if (
            not isinstance(cell, dict)
            or not isinstance(cell.get("kind"), str)
            or type(cell.get("seed")) is not int
        ):
            raise bad("has no kind and seed")
        row = cell.get("row")
        if not isinstance(row, dict) or not isinstance(row.get("estimator"), str):
            raise bad("has no row")
        for key in (*AVERAGED, "refinement_rises", "unfinished_warmup"):
            value = row.get(key, "missing")
            if value is not None and not _number(value, finite=key == "nll"):
                raise bad(f"has no number for {key}")

    def put(self, kind: str, seed: int, row: dict) -> None:
        """Store a finished cell (the file is rewritten whole and renamed into place)."""
        self.cells[kind, seed] = row
        self._write()

    def put_reference(self, reference: dict) -> None:
        """Store the generating model's row."""
        self.reference = reference
        self._write()

    def write_table(self, table: str) -> None:
        """Store the finished comparison's table."""
        try:
            atomic_write(self.path / self.TABLE, lambda tmp: tmp.write_text(table + "\n", encoding="utf-8"))
        except OSError as e:
            raise RunError(
                f"{self.path / self.TABLE}: could not write the table ({e.strerror or e})"
            ) from None

    def _write(self) -> None:
        cells = [{"kind": k, "seed": s, "row": row} for (k, s), row in self.cells.items()]
        text = json.dumps({"settings": self.identity, "cells": cells, "reference": self.reference}, indent=1)
        try:
            atomic_write(self.file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        except OSError as e:
            raise RunError(
                f"{self.file}: could not store the comparison's cells ({e.strerror or e})"
            ) from None


def _differences(a, b, prefix: str = "") -> list[str]:
    """The dotted names of the settings in which ``a`` and ``b`` differ."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [prefix or "settings"]
    out = []
    for key in sorted({*a, *b}, key=str):
        if a.get(key) != b.get(key):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
    return [name.rstrip(".") for name in out]


def _number(value, finite: bool = False) -> bool:
    if type(value) not in (int, float):
        return False
    return math.isfinite(value) or (not finite and math.isnan(value))
