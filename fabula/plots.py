"""Training curves of a run, drawn to PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fabula.checkpoint import atomic_write  # noqa: E402

PANELS = (
    ("loss", "train loss (annealed -ELBO per datum)"),
    ("test_perplexity", "test perplexity (ELBO, per document)"),
    ("test_kl", "test KL(q || p) per datum"),
    ("test_active_units", "test active units"),
)


def plot_curves(history: list[dict], path: str | Path) -> None:
    """One panel per metric against the epoch; metrics absent from ``history`` are skipped."""
    panels = [(k, title) for k, title in PANELS if history and k in history[0]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    epochs = [m["epoch"] for m in history]
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        ax.plot(epochs, [m[key] for m in history], marker="o", markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
