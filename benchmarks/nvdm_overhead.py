"""Cost of fabula's Pyro machinery: one NVDM training epoch through ``fabula.inference.Amortized``
against a plain-PyTorch loop computing the same loss on the same batches, in the same run.

All loops use the same encoder/decoder sizes, initial weights, Adam settings and batches
(20News, or the synthetic corpus with ``--data synthetic``). fabula is timed twice: with Pyro's
validation off (as ``fabula train`` runs) and on (Pyro's default, which checks every
distribution's arguments and every site's shape each step). Epochs rotate between the loops so
that machine load affects all alike; ratios of median epoch times are reported.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import pyro
import torch

from fabula.data import load_dataset, synthetic_nvdm_corpus
from fabula.guides import NormalGuide
from fabula.inference import Amortized
from fabula.models import NVDM
from results_log import record


def plain_step(story, guide, optimizer, batch):
    """Negative ELBO with analytic KL and one reparameterised sample, written in plain torch."""
    loc, log_scale = guide.net.mlp(batch.counts).chunk(2, dim=-1)
    z = loc + log_scale.exp() * torch.randn_like(loc)
    logp = torch.log_softmax(story.decoder(z), -1)
    recon = (batch.counts * logp).sum(-1) + batch.log_coef
    kl = 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)
    loss = (kl - recon).sum() / batch.size
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _fabula_step(inference, batch, validation: bool) -> float:
    with pyro.validation_enabled(validation):
        return inference.step(batch)["loss"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="20news", choices=["20news", "synthetic"])
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=9, help="timed epochs of each loop")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = (load_dataset("20news", args.data_dir) if args.data == "20news" else synthetic_nvdm_corpus()[0])[
        "train"
    ]
    V = len(train.vocab)
    story, guide = NVDM(V, 50), NormalGuide(V, 50, hidden=[500], activation="tanh")
    loops = {}
    for name in ("fabula", "fabula+validation"):
        inf = Amortized(copy.deepcopy(story), copy.deepcopy(guide), optim_args={"lr": 5e-4})
        loops[name] = lambda b, inf=inf, on=(name == "fabula+validation"): _fabula_step(inf, b, on)
    plain_story, plain_guide = copy.deepcopy(story), copy.deepcopy(guide)
    plain_opt = torch.optim.Adam([*plain_story.parameters(), *plain_guide.parameters()], lr=5e-4)
    loops["plain"] = lambda b: plain_step(plain_story, plain_guide, plain_opt, b)
    batches = list(train.batches(args.batch_size, shuffle=True, seed=0))
    times = {name: [] for name in loops}
    losses = {name: [] for name in loops}
    order = list(loops)
    for epoch in range(args.epochs + 1):  # epoch 0 warms up every loop
        for name in order[epoch % 3 :] + order[: epoch % 3]:
            torch.manual_seed(epoch)
            start = time.perf_counter()
            total = sum(loops[name](b) for b in batches)
            if epoch:
                times[name].append(time.perf_counter() - start)
                losses[name].append(total / len(batches))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["fabula"] / med["plain"]
    ratio_validated = med["fabula+validation"] / med["plain"]
    results = {
        "data": args.data,
        "batches": len(batches),
        "batch_size": args.batch_size,
        "epoch_seconds": times,
        "median_epoch_seconds": med,
        "ratio": ratio,
        "ratio_with_validation": ratio_validated,
        "mean_loss_last_epoch": {k: v[-1] for k, v in losses.items()},
    }
    table = "\n".join(
        [
            "| loop | median epoch (s) | ms/step | mean loss, last epoch |",
            "|---|---|---|---|",
            *[
                f"| {k} | {med[k]:.2f} | {1000 * med[k] / len(batches):.2f} | {losses[k][-1]:.2f} |"
                for k in med
            ],
            "",
            f"Ratio fabula / plain PyTorch: **{ratio:.3f}** (target <= 1.15); with Pyro validation on: "
            f"{ratio_validated:.3f}. Medians of {args.epochs} rotating epochs of {len(batches)} batches "
            f"of {args.batch_size} documents.",
        ]
    )
    print(table)
    if not args.no_record:
        record(f"nvdm_overhead_{args.data}", results, table)


if __name__ == "__main__":
    main()
