"""Latent Dirichlet allocation three ways on the 20 Newsgroups split of Miao et al. (2016), beside
its peers, every row the median of seeds; and collapsed Gibbs sampling's speed against the
registry's Cython sampler.

``--part table``: LDA with K topics (``fabula train lda``), trained by collapsed Gibbs sampling
(``collapsed-gibbs:SWEEPS``, batches of the whole training split, so an epoch is SWEEPS sweeps of
the corpus), by online variational Bayes (``vb``) and by an encoder (``vae``, the logistic-normal
guide), and the same split fitted by scikit-learn's ``LatentDirichletAllocation`` (online
variational Bayes) and by the ``lda`` package (collapsed Gibbs, Cython), with the same K, alpha
and eta. Every model's topics are scored by fabula alike, on the test split:

* left-to-right (Wallach et al. 2009, ``left-to-right:R``): needs only the topics and alpha, so it
  scores every row the same way (a stochastic lower bound of log p(w));
* importance-weighted (``iw:S``): the proposal is the row's q, a Dirichlet fitted to each document
  by mean-field updates for the sampled and variational-Bayes topics (fabula's and the peers'), the
  encoder's logistic normal for ``vae``;
* NPMI of each topic's top 10 words (document co-occurrence in the test split) and topic diversity
  (the unique share of the topics' top 25 words).

Perplexity per document, exp(mean_d NLL_d / N_d), the table's convention. Each row is run for
every ``--seeds``; the summary gives the median and the range.

``--part speed``: seconds per sweep of the whole training split (1,128,881 tokens) of fabula's
sampler (:func:`fabula.inference.collapsed_gibbs.sweep`) and of the ``lda`` package, in pairs,
one thread each, for each ``--speed-topics``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from fabula.data import load_dataset
from fabula.evaluation import evaluate, npmi, topic_diversity
from fabula.guides import DirichletGuide
from fabula.inference import CollapsedGibbs
from fabula.inference.base import Inference
from fabula.inference.variational_bayes import MeanFieldTopics
from fabula.models import LDA
from fabula.run import TrainConfig, load_run, train
from fabula.rundir import RunDirectory
from results_log import record, session

PAPER = [  # Miao et al. (2016), Table 1a: (model, estimator, perplexity)
    ("LDA 50 (Blei et al. 2003)", "as reported by Salakhutdinov & Hinton 2009", 1091),
    ("LDA 200 (Blei et al. 2003)", "as reported by Salakhutdinov & Hinton 2009", 1058),
]
FABULA_KINDS = ("collapsed-gibbs", "vb", "vae")
PEERS = ("scikit-learn", "lda")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["table", "speed"], default="table")
    p.add_argument("--data-dir", default="../shared/data", help="folder holding 20news/")
    p.add_argument(
        "--out", help="folder of the run directories, continued when present (default: a temporary one)"
    )
    p.add_argument("--topics", type=int, default=50, help="topics K")
    p.add_argument("--alpha", type=float, help="Dirichlet concentration of theta (default: 50/K)")
    p.add_argument("--eta", type=float, default=0.1, help="Dirichlet concentration of each topic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", nargs="+", default=[*FABULA_KINDS, *PEERS], choices=[*FABULA_KINDS, *PEERS])
    p.add_argument("--gibbs-epochs", type=int, default=10, help="epochs of collapsed-gibbs")
    p.add_argument("--gibbs-sweeps", type=int, default=30, help="sweeps of the corpus per epoch")
    p.add_argument("--vb-epochs", type=int, default=20)
    p.add_argument("--vb-batch-size", type=int, default=256)
    p.add_argument("--vae-epochs", type=int, default=100)
    p.add_argument("--sklearn-passes", type=int, default=20, help="max_iter of scikit-learn's online LDA")
    p.add_argument("--lda-iterations", type=int, default=300, help="Gibbs sweeps of the lda package")
    p.add_argument("--particles", type=int, default=20, help="particles R of the left-to-right estimator")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--speed-topics", type=int, nargs="+", default=[50, 200])
    p.add_argument("--speed-sweeps", type=int, default=5, help="sweeps timed per measurement")
    p.add_argument("--speed-pairs", type=int, default=3, help="alternating measurements of each sampler")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true", help="print only; do not write results")
    tiny = dict(
        topics=3,
        alpha=0.5,
        seeds=[0, 1],
        gibbs_epochs=1,
        gibbs_sweeps=2,
        vb_epochs=1,
        vb_batch_size=16,
        vae_epochs=1,
        sklearn_passes=1,
        lda_iterations=2,
        particles=2,
        iw_samples=3,
        speed_topics=[3],
        speed_sweeps=1,
        speed_pairs=1,
    )
    with session(p, argv, **tiny) as args:
        torch.set_num_threads(args.threads)
        return speed(args) if args.part == "speed" else table(args)


def counts_matrix(corpus) -> scipy.sparse.csr_matrix:
    """The corpus's documents as a sparse integer count matrix (the peers' input)."""
    shape = (len(corpus), len(corpus.vocab))
    data = corpus.counts.round().long().numpy()
    return scipy.sparse.csr_matrix((data, corpus.ids.numpy(), corpus.indptr.numpy()), shape=shape)


def fabula_row(args, folder: Path, kind: str, seed: int) -> tuple[Inference, float]:
    """``(inference object, train seconds)`` of the LDA trained by ``kind`` with ``seed``."""
    train_size = len(load_dataset("20news", args.data_dir)["train"])
    settings = {
        "collapsed-gibbs": dict(
            inference=f"collapsed-gibbs:{args.gibbs_sweeps}", epochs=args.gibbs_epochs, batch_size=train_size
        ),
        "vb": dict(inference="vb", epochs=args.vb_epochs, batch_size=args.vb_batch_size),
        "vae": dict(inference="vae", epochs=args.vae_epochs, batch_size=200, lr=2e-3),
    }[kind]
    out = folder / f"lda{args.topics}-{kind}-seed{seed}"
    config = TrainConfig.create(
        "lda",
        data="20news",
        data_dir=args.data_dir,
        seed=seed,
        num_topics=args.topics,
        alpha=args.alpha,
        eta=args.eta,
        **settings,
    )
    directory = RunDirectory(out)
    if len(directory.history()) < config.run.epochs:  # a finished run is only scored
        train(config, out, resume=directory.checkpoint_path.is_file(), progress=False)
    seconds = sum(m["train_seconds"] for m in RunDirectory(out).history())
    return load_run(out, data_dir=args.data_dir).inference, seconds


def peer_row(args, kind: str, seed: int, train_split) -> tuple[Inference, float]:
    """``(inference object, fit seconds)``: a peer's topics in an LDA story, with a Dirichlet q
    fitted per document (:class:`~fabula.inference.variational_bayes.MeanFieldTopics`)."""
    X = counts_matrix(train_split)
    start = time.perf_counter()
    if kind == "scikit-learn":
        from sklearn.decomposition import LatentDirichletAllocation

        model = LatentDirichletAllocation(
            n_components=args.topics,
            doc_topic_prior=args.alpha,
            topic_word_prior=args.eta,
            learning_method="online",
            max_iter=args.sklearn_passes,
            random_state=seed,
        ).fit(X)
        topics = model.components_ / model.components_.sum(1, keepdims=True)
    else:
        import lda

        model = lda.LDA(
            args.topics, n_iter=args.lda_iterations, alpha=args.alpha, eta=args.eta, random_state=seed
        )
        model.fit(X.astype(np.int64))
        topics = model.topic_word_
    seconds = time.perf_counter() - start
    story = LDA(len(train_split.vocab), args.topics, args.alpha, args.eta)
    story.set_topics(torch.as_tensor(topics, dtype=torch.float32).clamp_min(1e-12))
    return Inference(story, MeanFieldTopics(story, DirichletGuide(args.topics))), seconds


def score(args, inference, test) -> dict:
    """Left-to-right and importance-weighted perplexity, NPMI and diversity on the test split."""
    start = time.perf_counter()
    estimates = {
        f"left-to-right (R={args.particles})": evaluate(
            inference, test, f"left-to-right:{args.particles}", batch_size=len(test), progress=False
        ).summary(),
        f"IW (S={args.iw_samples})": evaluate(
            inference, test, f"iw:{args.iw_samples}", batch_size=50, progress=False
        ).summary(),
    }
    story = inference.story
    return {
        "estimates": {
            name: {k: s[k] for k in ("perplexity", "corpus_perplexity", "nll")}
            for name, s in estimates.items()
        },
        "npmi": float(npmi(story.topic_words(10), test).mean()),
        "diversity": topic_diversity(story.topic_words(25)),
        "eval_seconds": round(time.perf_counter() - start, 1),
    }


ROW_SETTINGS = {
    "collapsed-gibbs": ("gibbs_epochs", "gibbs_sweeps"),
    "vb": ("vb_epochs", "vb_batch_size"),
    "vae": ("vae_epochs",),
    "scikit-learn": ("sklearn_passes",),
    "lda": ("lda_iterations",),
}


def kept(args, folder: Path, row: str, seed: int, splits) -> dict:
    """The scored row of ``row`` and ``seed``, or the one an earlier invocation with the same
    settings kept in ``folder`` (so that rows run by separate invocations, ``--rows``, join one
    table)."""
    names = ("topics", "alpha", "eta", "particles", "iw_samples", *ROW_SETTINGS[row])
    key = {name: getattr(args, name) for name in names}
    path = folder / f"lda{args.topics}-{row}-seed{seed}.json"
    if path.is_file() and (saved := json.loads(path.read_text()))["key"] == key:
        return saved["row"]
    if row in FABULA_KINDS:
        inference, seconds = fabula_row(args, folder, row, seed)
    else:
        inference, seconds = peer_row(args, row, seed, splits["train"])
    torch.manual_seed(seed)
    result = {"train_seconds": round(seconds, 1), **score(args, inference, splits["test"])}
    path.write_text(json.dumps({"key": key, "row": result}, indent=1) + "\n")
    return result


def table(args) -> dict:
    if args.alpha is None:
        args.alpha = 50 / args.topics
    folder = Path(args.out or tempfile.mkdtemp(prefix="topics20-"))
    folder.mkdir(parents=True, exist_ok=True)
    splits = load_dataset("20news", args.data_dir)
    runs = {}
    for row in args.rows:
        for seed in args.seeds:
            runs.setdefault(row, {})[seed] = kept(args, folder, row, seed, splits)
            print(row, seed, runs[row][seed], flush=True)
    summary = {row: summarise(by_seed) for row, by_seed in runs.items()}
    text = markdown(args, summary)
    print(text)
    results = {"runs": runs, "summary": summary, "paper": PAPER, "settings": vars(args)}
    if not args.no_record:
        record(f"topic_models_20news_{args.topics}", results, text)
    return results


def median_range(values: list[float]) -> dict:
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def summarise(by_seed: dict) -> dict:
    """Median and range over seeds of every figure of a row."""
    rows = list(by_seed.values())
    estimates = {
        name: {
            key: median_range([r["estimates"][name][key] for r in rows]) for key in rows[0]["estimates"][name]
        }
        for name in rows[0]["estimates"]
    }
    scalars = ("npmi", "diversity", "train_seconds", "eval_seconds")
    return {
        "seeds": list(by_seed),
        "estimates": estimates,
        **{k: median_range([r[k] for r in rows]) for k in scalars},
    }


LABELS = {
    "collapsed-gibbs": "fabula, collapsed Gibbs (Griffiths & Steyvers 2004)",
    "vb": "fabula, online variational Bayes (Hoffman et al. 2010)",
    "vae": "fabula, encoder (logistic-normal q, Srivastava & Sutton 2017)",
    "scikit-learn": "scikit-learn LatentDirichletAllocation, online VB",
    "lda": "lda package, collapsed Gibbs (Cython)",
}


def markdown(args, summary: dict) -> str:
    def cell(m: dict, digits: int = 1) -> str:
        return f"{m['median']:.{digits}f} ({m['low']:.{digits}f} to {m['high']:.{digits}f})"

    lines = [
        "| model | estimator | test perplexity (per doc), median (range) | NPMI | diversity | train s | eval s |",
        "|---|---|---|---|---|---|---|",
        *(f"| {model}, paper | {estimator} | {figure} | | | | |" for model, estimator, figure in PAPER),
    ]
    for row, s in summary.items():
        for name, e in s["estimates"].items():
            cells = [f"LDA {args.topics}: {LABELS[row]}", name, cell(e["perplexity"]), cell(s["npmi"], 3)]
            cells += [cell(s["diversity"], 3), cell(s["train_seconds"], 0), cell(s["eval_seconds"], 0)]
            lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, args.seeds))
    lines.append(
        f"\nTest split, K = {args.topics}, alpha = {args.alpha:g}, eta = {args.eta:g}, seeds {seeds} (median and "
        f"range). collapsed-gibbs: {args.gibbs_epochs} x {args.gibbs_sweeps} sweeps; vb: {args.vb_epochs} epochs, "
        f"batches of {args.vb_batch_size}, kappa 0.7, tau0 10; vae: {args.vae_epochs} epochs, batches of 200, "
        f"Adam 0.002; scikit-learn: online, {args.sklearn_passes} passes; lda: {args.lda_iterations} sweeps. "
        "Left-to-right needs only the topics and alpha (a stochastic lower bound); IW's proposal is a "
        "Dirichlet fitted per document by mean-field updates, the encoder's logistic normal for vae. NPMI: "
        "top 10 words, document co-occurrence in the test split; diversity: unique share of the top 25."
    )
    return "\n".join(lines)


def speed(args) -> dict:
    """Seconds per sweep of the training split, fabula's and the lda package's, in pairs."""
    import lda

    train_split = load_dataset("20news", args.data_dir)["train"]
    X = counts_matrix(train_split).astype(np.int64)
    tokens = train_split.num_tokens
    batch = train_split.batch(torch.arange(len(train_split)))
    rows = {}
    for K in args.speed_topics:
        ours, theirs = [], []
        for pair in range(args.speed_pairs):
            story = LDA(len(train_split.vocab), K, 50 / K, args.eta)
            sampler = CollapsedGibbs(story)
            torch.manual_seed(pair)
            sampler.begin(train_split)
            sampler.step(batch)  # the counts built once
            sampler.sweeps = args.speed_sweeps
            start = time.perf_counter()
            sampler.step(batch)
            ours.append((time.perf_counter() - start) / args.speed_sweeps)
            times = []
            for iterations in (1, 1 + args.speed_sweeps):
                model = lda.LDA(
                    K, n_iter=iterations, alpha=50 / K, eta=args.eta, random_state=pair, refresh=10**9
                )
                start = time.perf_counter()
                model.fit(X)
                times.append(time.perf_counter() - start)
            theirs.append((times[1] - times[0]) / args.speed_sweeps)
        rows[K] = {
            "fabula_seconds": median_range(ours),
            "lda_seconds": median_range(theirs),
            "fabula_tokens_per_second": tokens / statistics.median(ours),
            "lda_tokens_per_second": tokens / statistics.median(theirs),
            "ratio": statistics.median(theirs) / statistics.median(ours),
        }
    lines = [
        "| K | fabula s / sweep | lda s / sweep | fabula tokens/s | lda tokens/s | lda / fabula |",
        "|---|---|---|---|---|---|",
    ]
    for K, r in rows.items():
        lines.append(
            f"| {K} | {r['fabula_seconds']['median']:.3f} | {r['lda_seconds']['median']:.3f} | "
            f"{r['fabula_tokens_per_second']:,.0f} | {r['lda_tokens_per_second']:,.0f} | {r['ratio']:.2f} |"
        )
    lines.append(
        f"\nThe training split ({tokens:,} tokens), one thread each; medians of {args.speed_pairs} alternating "
        f"measurements of {args.speed_sweeps} sweeps (the lda package's: the difference between fits of "
        f"{1 + args.speed_sweeps} and 1 iterations, so its setup is not counted). alpha = 50/K, eta = {args.eta:g}. "
        "fabula's sweep visits the documents' i-th tokens together (exact within a document, AD-LDA across)."
    )
    text = "\n".join(lines)
    print(text)
    results = {"rows": rows, "settings": vars(args)}
    if not args.no_record:
        record("topic_models_speed", results, text)
    return results


if __name__ == "__main__":
    main()
