"""Fit one NVDM story two ways, amortized and non-amortized VI, and compare them on held-out
documents with the ELBO and the importance-weighted bound.

The story class is the same in both fits: only the inference object changes.

    python examples/nvdm_two_ways.py                      # synthetic corpus, no download
    python examples/nvdm_two_ways.py --data-dir ../shared/data --epochs 20
"""

from __future__ import annotations

import argparse

import torch

from fabula.data import load_dataset, synthetic_nvdm_corpus
from fabula.devices import cpu_threads
from fabula.evaluation import ImportanceWeighted, evaluate
from fabula.guides import NormalGuide
from fabula.inference import Amortized, NonAmortized
from fabula.models import NVDM


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="folder holding 20news/ (default: the synthetic corpus)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=20)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--iw-samples", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(cpu_threads())  # as the fabula command: FABULA_THREADS, else half the cores

    data = load_dataset("20news", args.data_dir) if args.data_dir else synthetic_nvdm_corpus()[0]
    train = data["train"]
    V = len(train.vocab)
    results = {}
    for name in ("amortized", "non-amortized"):
        torch.manual_seed(0)
        story = NVDM(V, args.latent_dim)
        story.init_background(train)
        guide = NormalGuide(V, args.latent_dim, hidden=[args.hidden], activation="tanh")
        if name == "amortized":
            inference = Amortized(story, guide)
        else:
            inference = NonAmortized(story, guide, num_data=len(train), optim_args={"lr": 1e-2})
        inference.fit(train, epochs=args.epochs, batch_size=64, progress=False)
        # held-out documents need an encoder: the non-amortized story is scored with a guide
        # fitted afterwards to its frozen decoder, so both columns compare the stories themselves
        scorer = inference if name == "amortized" else Amortized(story, guide, learn_story=False)
        if name != "amortized":
            scorer.fit(train, epochs=args.epochs, batch_size=64, progress=False)
        elbo = evaluate(scorer, data["test"], "elbo").summary()
        iw = evaluate(scorer, data["test"], ImportanceWeighted(args.iw_samples)).summary()
        results[name] = {
            "elbo_perplexity": elbo["perplexity"],
            "iw_perplexity": iw["perplexity"],
            "kl": elbo["kl"],
        }
    print(f"| inference | test perplexity (ELBO) | test perplexity (IW, S={args.iw_samples}) | KL |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['elbo_perplexity']:.1f} | {r['iw_perplexity']:.1f} | {r['kl']:.2f} |")
    return results


if __name__ == "__main__":
    main()
