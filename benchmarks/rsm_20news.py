"""Replicated Softmax (F=50) on the 20 Newsgroups split of Miao et al. (2016): test perplexity by AIS
against the paper's 953 (Salakhutdinov & Hinton 2009, Table 1; quoted by Miao et al., Table 1a).

Trains with ``fabula.runs.train`` (the code behind ``fabula train rsm``): contrastive divergence
on mini-batches of 100 with the Gibbs steps rising from 1 to ``--max-gibbs-steps`` (the paper: 1 to
5 over 100,000 updates; here one more step every ``--steps-every`` updates, by default a fifth of
the run's updates, so the last fifth runs at 5), Adam and the weight cost of the recipe
(``fabula.inference.ContrastiveObjective`` says why not the paper's unstated SGD settings).
Then it scores the test split (or a random ``--test-size`` subset of it, seeded) with annealed
importance sampling: ``--runs`` runs per distinct document length over ``--temperatures``
inverse temperatures spaced as Salakhutdinov & Murray (2008), from the base-rate model (the
training corpus's smoothed unigram frequencies, no weights) to the RSM, log Z_D once per length.
Perplexity is per document, exp(mean_d NLL_d / N_d), the paper's convention, NLL the token
sequence's (no multinomial coefficient). AIS's log Z is biased low, so the perplexity is biased
optimistic (a stochastic lower bound); the band moves every log Z_D by two of its standard errors.

A check of AIS that needs no sampling: log Z_D >= D max_h g(h), the hidden units' marginal at its
best state (the AIS estimator's ``ais_mode_gap``: coordinate ascent from random states and the
test documents' rounded posteriors). Where it exceeds AIS's estimate, AIS missed the mass of that
mode; the perplexity with each log Z_D raised to the bound is still a lower bound on the true
one, and a tighter one.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import torch

from fabula.data import load_dataset
from fabula.evaluation import AIS, evaluate
from fabula.evaluation.metrics import perplexities
from fabula.rundir import RunDirectory
from fabula.runs import TrainConfig, load_run, train
from results_log import record, session

PAPER = {"RSM 50": 953, "LDA 50": 1091, "NVDM 50-d": 836}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data", help="folder holding 20news/")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--hidden", type=int, default=50, help="hidden units F")
    p.add_argument("--inference", default="cd:1", help="cd:K or pcd:K (K: the first Gibbs steps)")
    p.add_argument("--max-gibbs-steps", type=int, default=5)
    p.add_argument(
        "--steps-every", type=int, help="updates per further Gibbs step (default: a fifth of the run's)"
    )
    p.add_argument("--runs", type=int, default=100, help="AIS runs per document length")
    p.add_argument("--temperatures", type=int, default=14_500, help="AIS inverse temperatures")
    p.add_argument("--test-size", type=int, help="score a random subset of this many test documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="run directory (default: a temporary one)")
    p.add_argument("--no-record", action="store_true", help="print only; do not write results")
    with session(p, argv, epochs=1, hidden=5, runs=2, temperatures=10) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="rsm20-")
    per_epoch = math.ceil(len(load_dataset("20news", args.data_dir)["train"]) / args.batch_size)
    config = TrainConfig.create(
        "rsm",
        data="20news",
        data_dir=args.data_dir,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        hidden=args.hidden,
        inference=args.inference,
        max_gibbs_steps=args.max_gibbs_steps,
        steps_every=args.steps_every or max(1, math.ceil(args.epochs * per_epoch / args.max_gibbs_steps)),
        seed=args.seed,
    )
    start = time.perf_counter()
    train(config, out)
    wall = time.perf_counter() - start
    history = RunDirectory(out).history()
    train_seconds = sum(m["train_seconds"] for m in history)
    run = load_run(out)
    test = run.splits["test"]
    if args.test_size and args.test_size < len(test):
        picked = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[
            : args.test_size
        ]
        test = test.subset(picked.sort().values)
    estimator = AIS(args.runs, args.temperatures, seed=args.seed)
    t0 = time.perf_counter()
    report = evaluate(run.inference, test, estimator, batch_size=len(test), progress=True)
    ais_seconds = time.perf_counter() - t0
    summary = report.summary()
    se = report.diagnostics["ais_se"]
    band = {
        "low": perplexities(report.nll - 2 * se, report.tokens)["perplexity"],
        "high": perplexities(report.nll + 2 * se, report.tokens)["perplexity"],
    }
    lengths = report.tokens.long().unique()
    gap = report.diagnostics["ais_mode_gap"]  # log Z_D >= D max_h g(h): by how much AIS is below
    raised = perplexities(report.nll + gap, report.tokens)
    missed = {int(d) for d, m in zip(report.tokens.tolist(), gap.tolist(), strict=True) if m > 0}
    results = {
        "config": config.to_dict(),
        "updates": history[-1]["epoch"] * per_epoch,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "test_documents": len(test),
        "distinct_lengths": len(lengths),
        "ais": summary,
        "ais_runs": args.runs,
        "ais_temperatures": args.temperatures,
        "ais_seconds": round(ais_seconds, 1),
        "band": band,
        "mode_bound": {
            "lengths_above_ais": len(missed),
            "shortest_above_ais": min(missed, default=None),
            "perplexity": raised["perplexity"],
            "corpus_perplexity": raised["corpus_perplexity"],
        },
        "last_epoch": history[-1],
        "paper": PAPER,
    }
    scope = "test split" if len(test) == len(run.splits["test"]) else f"{len(test)} random test documents"
    table = "\n".join(
        [
            "| model | estimator | test perplexity (per doc) | 2-SE band | corpus perplexity |",
            "|---|---|---|---|---|",
            f"| RSM 50, paper (Salakhutdinov & Hinton 2009) | AIS | {PAPER['RSM 50']} | | |",
            f"| LDA 50, paper | | {PAPER['LDA 50']} | | |",
            f"| fabula RSM {args.hidden}, {args.inference} k->{args.max_gibbs_steps}, {len(history)} epochs | "
            f"AIS ({args.runs} runs, {args.temperatures} temperatures) | {summary['perplexity']:.1f} | "
            f"{band['low']:.1f}-{band['high']:.1f} | {summary['corpus_perplexity']:.1f} |",
            f"| the same, log Z_D raised to D max_h g(h) where AIS is below it | AIS + mode bound | "
            f"{raised['perplexity']:.1f} | | {raised['corpus_perplexity']:.1f} |",
            "",
            f"Scored on the {scope} ({len(lengths)} distinct lengths, one AIS per length; log Z_D "
            f"standard error mean {summary['ais_se_mean']:.3f}, max {summary['ais_se_max']:.3f} nats). "
            f"Effective AIS runs per length: mean {summary['ais_ess_mean']:.1f} of {args.runs}. "
            f"The mode bound exceeds AIS's log Z_D at {len(missed)} of {len(lengths)} lengths"
            + (f" (from D = {min(missed)})" if missed else "")
            + f". Training {train_seconds:.0f} s for {results['updates']} updates; AIS {ais_seconds:.0f} s. "
            "AIS's log Z is biased low, so both figures are lower bounds (stochastic) on the perplexity.",
        ]
    )
    print(table)
    if not args.no_record:
        record("rsm_20news", results, table)
    return results


if __name__ == "__main__":
    main()
