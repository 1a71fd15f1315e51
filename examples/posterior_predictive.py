"""A posterior predictive check of NVDM: word statistics of real documents against documents
drawn from the fitted story's posterior predictive distribution.

For each held-out document d, ``S`` replicas are drawn with Pyro's own machinery,
``Predictive(poutine.uncondition(story.model), guide=guide, num_samples=S)(batch)``: z from the
amortized q(z | x_d), then a document of x_d's length from p(x | z). A statistic T of the corpus
is checked by its posterior predictive p-value, p = P(T(x_rep) >= T(x)) over the replicas
(Gelman, Meng & Stern 1996); values near 0 or 1 flag what the story does not reproduce, e.g.
word burstiness, which a multinomial understates (Mimno & Blei 2011). Document lengths are
given to the story, not generated, so they match by construction.

    python examples/posterior_predictive.py                          # synthetic corpus, no download
    python examples/posterior_predictive.py --data-dir ../shared/data --epochs 20 --out runs/ppc20

The figure is written to ``posterior_predictive.png`` in the ``--out`` folder.

References:
  A. Gelman, X.-L. Meng, H. Stern. Posterior Predictive Assessment of Model Fitness via Realized
  Discrepancies. Statistica Sinica 1996.
  D. Mimno, D. Blei. Bayesian Checking for Topic Models. EMNLP 2011.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from pyro import poutine
from pyro.infer import Predictive

from fabula.data import load_dataset, synthetic_nvdm_corpus
from fabula.devices import cpu_threads
from fabula.guides import NormalGuide
from fabula.inference import Amortized
from fabula.models import NVDM


def document_statistics(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-document statistics of ``[..., D, V]`` word counts, each ``[..., D]``."""
    return {
        "length": counts.sum(-1),
        "distinct words": (counts > 0).sum(-1).to(counts.dtype),
        "largest word count": counts.max(-1).values,
    }


def top_word_shares(counts: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """The share of all tokens that each of ``words`` takes, over the ``D`` documents: ``[..., k]``."""
    total = counts.sum((-2, -1), keepdim=True).squeeze(-1)
    return counts.sum(-2)[..., words] / total


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder holding 20news/ (default: the synthetic corpus)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--docs", type=int, default=200, help="held-out documents checked")
    p.add_argument("--draws", type=int, default=100, help="posterior predictive replicas per document")
    p.add_argument("--top-words", type=int, default=10)
    p.add_argument(
        "--out",
        default="runs/posterior_predictive",
        help="folder for the figure (default: runs/posterior_predictive)",
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(cpu_threads())  # as the fabula command: FABULA_THREADS, else half the cores

    data = load_dataset("20news", args.data_dir) if args.data_dir else synthetic_nvdm_corpus()[0]
    train, test = data["train"], data["test"]
    V = len(train.vocab)
    torch.manual_seed(args.seed)
    story = NVDM(V, args.latent_dim)
    story.init_background(train)
    guide = NormalGuide(V, args.latent_dim, hidden=[args.hidden], activation="tanh")
    Amortized(story, guide).fit(train, epochs=args.epochs, batch_size=64, progress=False)

    batch = test.batch(torch.arange(min(args.docs, len(test))))
    predictive = Predictive(poutine.uncondition(story.model), guide=guide, num_samples=args.draws)
    replicas = predictive(batch)["x"]  # [S, D, V]

    real, predicted = document_statistics(batch.counts), document_statistics(replicas)
    words = batch.counts.sum(0).topk(args.top_words).indices
    real_shares, predicted_shares = top_word_shares(batch.counts, words), top_word_shares(replicas, words)
    results = {}
    for name in real:  # corpus means: the real one and one per replica, [S]
        results[name] = _check(real[name].mean(), predicted[name].mean(-1))
    results["length"]["p_value"] = None  # given to the story, not generated
    share_real, share_rep = real_shares.sum(), predicted_shares.sum(-1)
    results[f"share of the top {args.top_words} words"] = _check(share_real, share_rep)

    print(
        f"posterior predictive check of NVDM on {batch.size} held-out documents, {args.draws} replicas each"
    )
    print("| statistic (corpus mean) | real | predicted (mean ± sd) | p-value |")
    print("|---|---|---|---|")
    for name, r in results.items():
        p_value = "given" if r["p_value"] is None else f"{r['p_value']:.2f}"
        print(f"| {name} | {r['real']:.3f} | {r['predicted']:.3f} ± {r['sd']:.3f} | {p_value} |")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "posterior_predictive.png"
    _plot(figure, real, predicted, words, real_shares, predicted_shares, train.vocab)
    print(f"figure: {figure}")
    results["plot"] = str(figure)
    return results


def _check(t_real: torch.Tensor, t_rep: torch.Tensor) -> dict:
    """A statistic's real value, its replicas' mean and sd, and the p-value P(T_rep >= T_real)."""
    return {
        "real": float(t_real),
        "predicted": float(t_rep.mean()),
        "sd": float(t_rep.std()) if t_rep.numel() > 1 else 0.0,
        "p_value": float((t_rep >= t_real).double().mean()),
    }


def _plot(path, real, predicted, words, real_shares, predicted_shares, vocab) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, name in zip(axes[:2], ("distinct words", "largest word count"), strict=True):
        top = float(torch.maximum(real[name].max(), predicted[name].max()))
        bins = torch.linspace(0, top + 1, 30).tolist()
        ax.hist(predicted[name].flatten().tolist(), bins=bins, density=True, alpha=0.5, label="predicted")
        ax.hist(real[name].tolist(), bins=bins, density=True, histtype="step", linewidth=2, label="real")
        ax.set(title=f"{name} per document", xlabel=name, ylabel="density")
        ax.legend()
    ax = axes[2]
    positions = torch.arange(len(words)).tolist()
    shares = predicted_shares.mean(0).tolist()
    ax.bar(positions, shares, yerr=predicted_shares.std(0).tolist(), alpha=0.5, label="predicted")
    ax.plot(positions, real_shares.tolist(), "k_", markersize=20, mew=2, label="real")
    ax.set_xticks(positions, [vocab[int(w)] for w in words], rotation=60)
    ax.set(title="share of tokens of the most frequent words", ylabel="share")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
