"""Cost of one SA-VAE training step relative to one VAE step (Kim et al. 2018), with exact and
finite-difference Hessian-vector products, and the peak memory of each.

Each variant runs in its own process (so that its peak resident memory is its own) on the same
batches of the SA-VAE synthetic oracle corpus with the LSTM-VAE of ``fabula compare``'s default
sizes; step times are medians, and ratios are taken against the VAE step of the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.guides import SentenceGuide
from fabula.inference import Amortized, Refinement, SemiAmortized
from fabula.models import LSTMVAE
from results_log import record, session, synthetic_sizes

VARIANTS = ("vae", "sa-vae exact", "sa-vae finite-difference")


def measure(variant: str, steps: int, k: int, batch_size: int, **sizes) -> dict:
    """Median seconds per training step and peak resident memory of this process; ``sizes``: the
    corpus's split sizes (see ``synthetic_sentence_corpus``)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data, _ = synthetic_sentence_corpus(**sizes)
    V = len(data["train"].vocab)
    story, guide = LSTMVAE(V, 2, 100, 100), SentenceGuide(V, 2, 100, 100)
    if variant == "vae":
        inference = Amortized(story, guide)
    else:
        hvp = "exact" if variant.endswith("exact") else "finite-difference"
        inference = SemiAmortized(story, guide, Refinement(steps=k, lr=1.0, hvp=hvp))
    batches = list(data["train"].batches(batch_size, shuffle=True))[: steps + 2]
    times = []
    for i, batch in enumerate(batches):
        start = time.perf_counter()
        inference.step(batch)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    return {
        "seconds_per_step": statistics.median(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=20, help="refinement steps (default: 20)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps per variant")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in a child process
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, k=2, steps=2, batch_size=12) as args:
        return benchmark(args)


def benchmark(args) -> dict | None:
    """The benchmark with parsed ``args``; returns what it records (nothing in a child process)."""
    if args.variant:
        print(json.dumps(measure(args.variant, args.steps, args.k, args.batch_size, **synthetic_sizes(args))))
        return
    rows = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                variant,
                "--k",
                str(args.k),
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                *(["--smoke"] if args.smoke else []),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        rows[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    base = rows["vae"]["seconds_per_step"]
    table = "\n".join(
        ["| step | ms/step | x VAE step | peak RSS (MB) |", "|---|---|---|---|"]
        + [
            f"| {v} (K={args.k}) | {1000 * r['seconds_per_step']:.1f} | {r['seconds_per_step'] / base:.1f} | {r['peak_rss_mb']:.0f} |"
            if v != "vae"
            else f"| vae | {1000 * r['seconds_per_step']:.1f} | 1.0 | {r['peak_rss_mb']:.0f} |"
            for v, r in rows.items()
        ]
        + [
            "",
            f"Medians of {args.steps} steps of {args.batch_size} oracle sentences, one thread, each variant in its own process.",
        ]
    )
    print(table)
    if not args.no_record:
        record("savae_cost", {"k": args.k, "rows": rows}, table)
    return rows


if __name__ == "__main__":
    main()
