"""Kim et al. (2018)'s comparison of inference objects on a real corpus: the NVDM on 20 Newsgroups
or the LSTM-VAE on Penn Treebank (the Yahoo training split Kim et al. used is not provided), each
story trained from the same initial weights and seed with every ``--inference`` object by
``fabula.run.compare`` and evaluated on the test split: the negative ELBO (10 samples), the
importance-weighted bound (``--iw-samples``), KL, perplexity, training time and steps/s.

SA-VAE costs about 50 VAE steps per step at K = 20 on a CPU; on PTB, ``--train-size`` and
``--test-size`` keep the first sentences of each split so that the table fits a CPU budget.
"""

from __future__ import annotations

import argparse

import torch

from fabula.data.text import TextCorpus
from fabula.run import TrainConfig, data_description, load_data
from fabula.run.compare import CompareSettings, compare, markdown
from fabula.run.plan import build_story
from results_log import record, session

STORY = {"20news": "nvdm", "ptb": "lstm-vae"}


def first(corpus: TextCorpus, size: int | None) -> TextCorpus:
    """The first ``size`` sentences of ``corpus`` (all of it when ``size`` is None)."""
    if size is None or size >= len(corpus):
        return corpus
    return TextCorpus([corpus.sentence(i) for i in range(size)], corpus.vocab, name=f"{corpus.name}[:{size}]")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(STORY), default="20news")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--inference", nargs="+", default=["vae", "svi:20", "vae+svi:20", "sa-vae:20"])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default: 5e-4)")
    p.add_argument("--refinement-lr", type=float, default=0.1, help="step size of the K refinement steps")
    p.add_argument("--anneal", help="KL annealing schedule, e.g. linear:2000 (default: none)")
    p.add_argument("--latent-dim", type=int, help="z size (default: 50 for NVDM, 13 for the LSTM-VAE)")
    p.add_argument("--hidden-dim", type=int, default=191, help="LSTM-VAE: embedding and LSTM size")
    p.add_argument("--train-size", type=int, help="PTB: the first N training sentences (default: all)")
    p.add_argument("--test-size", type=int, help="PTB: the first N test sentences (default: all)")
    p.add_argument("--iw-samples", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3, help="seeds per kind, from --seed: rows are their means")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(
        p,
        argv,
        epochs=1,
        latent_dim=5,
        hidden_dim=16,
        inference=["vae", "svi:2", "vae+svi:2", "sa-vae:2"],
        iw_samples=3,
        seeds=1,
    ) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    story = STORY[args.data]
    sizes = (
        {"hidden": (args.hidden_dim,)}
        if story == "nvdm"
        else {"embed_dim": args.hidden_dim, "hidden_dim": args.hidden_dim}
    )
    config = TrainConfig.create(  # the mean-field ELBO without free bits, clipped at 5, as recorded
        story,
        data=args.data,
        data_dir=args.data_dir,
        latent_dim=args.latent_dim or (50 if story == "nvdm" else 13),
        seed=args.seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clip_norm=5.0,
        refinement_lr=args.refinement_lr,
        anneal=args.anneal,
        free_bits=None,
        **sizes,
    )
    splits, _ = load_data(data_description(config))
    if story != "nvdm":
        splits = {
            **splits,
            "train": first(splits["train"], args.train_size),
            "test": first(splits["test"], args.test_size),
        }
    settings = CompareSettings(
        inference=tuple(args.inference),
        train_size=None,
        test_size=None,
        samples=args.iw_samples,
        seeds=args.seeds,
    )
    rows = compare(config, lambda: build_story(config, splits["train"]), splits, settings)
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in ("train", "test"))
    table = (
        f"{story} on {args.data} ({sizes}; z in R^{config.model.latent_dim}), {args.epochs} epochs, Adam {args.lr}, "
        f"batch {args.batch_size}, refinement step {args.refinement_lr}, KL annealing {args.anneal or 'none'}; "
        f"NLL in nats per datum, IW S={args.iw_samples}:\n\n" + markdown(rows)
    )
    print(table)
    if not args.no_record:
        record(f"inference_{args.data}", {"rows": rows, "args": vars(args)}, table)
    return rows


if __name__ == "__main__":
    main()
