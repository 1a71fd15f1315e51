"""Training curves of a run, for mixture stories its component means over training, and a
comparison's NLL per kind, drawn to PNG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch

from fabula.checkpoint import atomic_write

#: The panels of ``curves.png``: the metrics each plots and its title.
PANELS = (
    (("loss",), "train loss per datum (the objective trained on)"),
    (("eval_perplexity", "eval_corpus_perplexity"), "perplexity (ELBO): per document, corpus"),
    (("eval_kl", "eval_mi"), "KL(q || p) and MI I(x; z) per datum"),
    (("eval_reconstruction",), "reconstruction E_q[log p(x | z)] per datum"),
    (("eval_active_units",), "active units"),
    (("eval_kl_c", "eval_kl_z", "eval_mi_c"), "mixture: KL(c), KL(z), MI(x; c) per datum"),
    (("eval_vm", "eval_dispersion"), "mixture: variance of component means"),
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


def plot_component_means(history: list[dict], path: str | Path, columns: int = 5) -> None:
    """The mixture components' means ``history[e]["component_means"]`` (``[M, K, D]``) over the
    epochs, one panel per latent pair (``columns`` to a row): each component's path from its first
    to its last epoch (a dot), projected on the two principal axes of all the drawn means when
    ``D > 2``. Means that run together are mode collapse (Shi et al. 2020 draw this figure)."""
    means = torch.tensor([m["component_means"] for m in history if "component_means" in m])  # [E, M, K, D]
    if not len(means):
        return
    E, M, K, D = means.shape
    rows, cols = -(-M // columns), min(M, columns)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[M:]:
        ax.set_visible(False)
    for m, ax in enumerate(axes.flat[:M]):
        points = means[:, m].reshape(E * K, D)
        if D > 2:
            centered = points - points.mean(0)
            points = centered @ torch.linalg.svd(centered, full_matrices=False).Vh[:2].T
        elif D == 1:
            points = torch.cat([points, torch.zeros_like(points)], -1)
        paths = points.reshape(E, K, 2)
        for k in range(K):
            line = ax.plot(paths[:, k, 0], paths[:, k, 1], alpha=0.6, linewidth=1)[0]
            ax.scatter(paths[-1, k, 0], paths[-1, k, 1], color=line.get_color(), s=18, label=str(k))
        ax.set_title(f"pair {m}: component means, epochs 1-{E}" + (" (PCA)" if D > 2 else ""), fontsize=9)
        ax.grid(alpha=0.3)
        if K <= 12:
            ax.legend(fontsize=6, title="component", title_fontsize=6)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def plot_comparison(rows: dict[str, dict], path: str | Path, reference: dict | None = None) -> None:
    """Each kind's NLL at every seed (dots) and their mean (a bar) from
    :func:`~fabula.run.compare.summarise`'s ``rows``, the generating model's NLL as a line
    where there is one: which kinds separate, and by how much against the seeds' spread."""
    kinds = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(kinds), 3.4))
    for i, spec in enumerate(kinds):
        per_seed = rows[spec]["nll_per_seed"]
        ax.plot([i] * len(per_seed), per_seed, "o", color="C0", alpha=0.6, markersize=4)
        ax.hlines(rows[spec]["nll"], i - 0.3, i + 0.3, color="C1", linewidth=2)
    if reference is not None:
        ax.axhline(reference["nll"], color="C2", linestyle="--", linewidth=1, label="generating model")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(kinds)), kinds, fontsize=8)
    ax.set_ylabel(f"test NLL per datum ({rows[kinds[0]]['estimator']})")
    ax.set_title(f"each seed (dots) and the mean over {rows[kinds[0]]['seeds']} (bar)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
