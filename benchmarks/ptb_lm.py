"""Bowman et al. (2016) Penn Treebank language-modelling table: an RNN language model and an
LSTM-VAE with the paper's sizes (353-d embeddings, 191-d LSTM, 13-d z), trained by ``fabula
train`` and evaluated on the test split.

The RNNLM's NLL is exact; the VAE's is given as the ELBO bound (reconstruction plus KL, the
estimator of Bowman et al.'s table, which shows the KL beside the total) and as the tighter
importance-weighted bound with ``--iw-samples`` samples. Perplexity is exp(sum NLL / sum tokens)
with ``<eos>`` counted, as in Bowman et al. and Kim et al. Paper: RNNLM test PPL 116; VAE NLL 101
(KL 2), PPL 119.

Recipe (the defaults): SGD at lr 1 on the per-sentence loss, clipped to global norm 5, halved
each epoch after the sixth, 13 epochs, dropout 0.3; the VAE adds linear KL annealing over 8,000
steps and 0.2 free nats per latent coordinate.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from fabula.evaluation import ImportanceWeighted, evaluate
from fabula.run import TrainConfig, load_run, train
from fabula.rundir import RunDirectory
from results_log import record, session

PAPER = {"rnnlm": {"nll": 100, "ppl": 116}, "lstm-vae": {"nll": 101, "kl": 2, "ppl": 119}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--story", choices=sorted(PAPER), required=True)
    p.add_argument("--data-dir", default="../shared/data", help="folder holding ptb/")
    p.add_argument("--epochs", type=int, default=13)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="sgd")
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--lr-decay", type=float, default=0.5, help="per epoch after --decay-after")
    p.add_argument("--decay-after", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--anneal", default="linear:8000", help="lstm-vae: KL annealing schedule")
    p.add_argument("--free-bits", type=float, default=0.2, help="lstm-vae: free bits per coordinate")
    p.add_argument("--word-dropout", type=float, default=0.0, help="lstm-vae: word dropout rate")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--out", help="run directory (default: a temporary one); an existing run there is continued"
    )
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, epochs=1, iw_samples=3) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    vae = args.story == "lstm-vae"
    config = TrainConfig.create(
        args.story,
        data="ptb",
        data_dir=args.data_dir,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        lr_decay=args.lr_decay,
        decay_after=args.decay_after,
        batch_size=args.batch_size,
        embed_dim=353,
        hidden_dim=191,
        dropout=args.dropout,
        anneal=args.anneal if vae else None,
        free_bits=args.free_bits if vae else None,
        **({"latent_dim": 13} if vae else {}),
        word_dropout=args.word_dropout if vae else 0.0,
        clip_norm=5.0,
    )
    out = args.out or tempfile.mkdtemp(prefix=f"ptb-{args.story}-")
    # an existing run in --out is continued up to --epochs (or only evaluated, if it has them)
    run = RunDirectory(out)
    train(config, out, resume=run.checkpoint_path.exists())
    history = run.history()
    train_seconds = sum(m["train_seconds"] for m in history)
    run = load_run(out)
    test = run.splits["test"]
    first = "elbo" if vae else "exact"
    reports = {first: evaluate(run.inference, test, first, batch_size=64).summary()}
    if vae:
        reports["iw"] = evaluate(
            run.inference, test, ImportanceWeighted(args.iw_samples), batch_size=16, progress=True
        ).summary()
    best = min(history, key=lambda m: m["eval_corpus_perplexity"])
    rows = [
        "| model | estimator | test NLL (nats/sentence) | test PPL | KL | MI | AU |",
        "|---|---|---|---|---|---|---|",
        f"| {args.story}, Bowman et al. 2016 | {'ELBO' if vae else 'exact'} | {PAPER[args.story]['nll']} | "
        f"{PAPER[args.story]['ppl']} | {PAPER[args.story].get('kl', '')} | | |",
    ]
    for name, r in reports.items():
        estimator = {"elbo": "ELBO", "exact": "exact", "iw": f"IW (S={args.iw_samples})"}[name]
        rows.append(
            f"| fabula {args.story}, epoch {args.epochs} | {estimator} | {r['nll']:.2f} | {r['corpus_perplexity']:.1f} | "
            f"{r['kl']:.2f} | {r['mi']:.2f} | {r['active_units']} |"
        )
    table = "\n".join(rows) + (
        f"\n\nTraining: {train_seconds:.0f} s for {args.epochs} epochs (evaluation excluded); best validation "
        f"ELBO PPL {best['eval_corpus_perplexity']:.1f} at epoch {best['epoch']}. Settings: {config.to_dict()}."
    )
    print(table)
    results = {"config": config.to_dict(), "reports": reports, "history": history}
    if not args.no_record:
        record(f"ptb_{args.story}", results, table)
    return results


if __name__ == "__main__":
    main()
