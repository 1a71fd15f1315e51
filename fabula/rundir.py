"""A run directory: ``checkpoint.safetensors`` (:mod:`fabula.checkpoint`), ``metrics.jsonl`` (one
line per epoch), ``curves.png``, and whatever the story's per-epoch callbacks draw."""

from __future__ import annotations

import json
from pathlib import Path

from fabula.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fabula.errors import RunError
from fabula.plots import plot_curves


class RunDirectory:
    """The files of one training run under ``path``."""

    CHECKPOINT, METRICS, CURVES = "checkpoint.safetensors", "metrics.jsonl", "curves.png"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint_path = self.path / self.CHECKPOINT
        self.metrics_path = self.path / self.METRICS

    def begin(self, resume: bool) -> Checkpoint | None:
        """Start a new run (refusing a directory that holds one) or, with ``resume``, load the
        last checkpoint and drop the metrics of epochs after it."""
        exists = self.checkpoint_path.exists()
        if exists and not resume:
            raise RunError(
                f"{self.path} already holds a run; pass --resume to continue it or choose another --out"
            )
        if resume and not exists:
            raise RunError(f"{self.checkpoint_path}: nothing to resume")
        if resume:
            checkpoint = load_checkpoint(self.checkpoint_path)
            kept = [m for m in self.history() if m["epoch"] <= checkpoint.metadata["epoch"]]
            self.metrics_path.write_text("".join(json.dumps(m) + "\n" for m in kept))
            return checkpoint
        self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_path.unlink(missing_ok=True)
        return None

    def load(self) -> Checkpoint:
        return load_checkpoint(self.checkpoint_path)

    def commit(self, modules: dict, state: dict, metadata: dict, metrics: dict) -> list[dict]:
        """Write the epoch's checkpoint, then its metrics line and the curves; returns the history."""
        save_checkpoint(self.checkpoint_path, modules, state, metadata)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        history = self.history()
        plot_curves(history, self.path / self.CURVES)
        return history

    def history(self) -> list[dict]:
        """Every epoch's metrics so far."""
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
