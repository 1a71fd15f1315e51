"""Training curves of a run, drawn to PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fabula.checkpoint import atomic_write  # noqa: E402

PANELS = (
    (("loss",), "train loss (annealed -ELBO per datum)"),
    (("eval_perplexity", "eval_corpus_perplexity"), "perplexity (ELBO): per document, corpus"),
    (("eval_kl", "eval_mi"), "KL(q || p) and MI I(x; z) per datum"),
    (("eval_reconstruction",), "reconstruction E_q[log p(x | z)] per datum"),
    (("eval_active_units",), "active units"),
)


def plot_curves(history: list[dict], path: str | Path) -> None:
    """One panel per group of metrics against the epoch; metrics absent from ``history`` are
    skipped. Evaluated metrics are of the split named by ``eval_split``."""
    panels = [(keys, title) for keys, title in PANELS if history and any(k in history[0] for k in keys)]
    if not panels:
        return
    split = history[0].get("eval_split", "")
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    epochs = [m["epoch"] for m in history]
    for ax, (keys, title) in zip(axes[0], panels, strict=True):
        for key in keys:
            if key in history[0]:
                ax.plot(
                    epochs,
                    [m[key] for m in history],
                    marker="o",
                    markersize=3,
                    label=key.removeprefix("eval_"),
                )
        ax.set_title(title if keys == ("loss",) else f"{split}: {title}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
