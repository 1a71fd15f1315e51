"""Cost of fabula's Pyro machinery: training epochs through ``fabula.inference.Amortized``
against a plain-PyTorch loop computing the same loss with the same networks on the same
batches, in the same run.

* ``--story nvdm``: NVDM (z=50, 500-unit encoder) on 20News (or ``--data synthetic``);
* ``--story lstm-vae``: the LSTM-VAE with Bowman et al.'s PTB sizes on the first
  ``--batches`` PTB training batches; throughput is reported in tokens per second.

fabula is timed twice: with Pyro's validation off and on (Pyro's default, which checks every
distribution's arguments and every site's shape each step). The loops take turns in blocks of
``--block`` batches (in rotating order), each timing its own steps, so that the machine's load
falls on all alike while each runs on caches it warmed itself: taking turns batch by batch, each
step first reloads its loop's weights and optimizer moments (about 18 MB per NVDM loop) and the
cache misses, not the loops, set the times. Ratios of median epoch times are reported.

``--story nvdm`` also measures the fixed cost of a step through Pyro, the same three loops on a
tiny NVDM (20 words, z=4) whose arithmetic costs next to nothing: the difference of the step
times is what the two traces (guide, and story replayed on it) add to any step.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import pyro
import torch
import torch.nn.functional as F

from fabula.data import load_dataset, synthetic_nvdm_corpus
from fabula.guides import NormalGuide, SentenceGuide
from fabula.inference import Amortized
from fabula.models import LSTMVAE, NVDM
from results_log import record, session


def gaussian_kl(loc, log_scale):
    return 0.5 * (loc.pow(2) + (2 * log_scale).exp() - 1 - 2 * log_scale).sum(-1)


def plain_nvdm_loss(story, guide, batch):
    """Negative ELBO with analytic KL and one reparameterised sample, in plain torch."""
    loc, log_scale = guide.net.mlp(batch.counts).chunk(2, dim=-1)
    z = loc + log_scale.exp() * torch.randn_like(loc)
    recon = (batch.counts * torch.log_softmax(story.decoder(z), -1)).sum(-1)
    return (gaussian_kl(loc, log_scale) - recon).sum() / batch.size


def plain_lstm_vae_loss(story, guide, batch):
    loc, log_scale = guide.net(batch).chunk(2, dim=-1)
    z = loc + log_scale.exp() * torch.randn_like(loc)
    logits = story.decoder(batch.decoder_inputs, z)
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1), reduction="none")
    nll = (nll.reshape(batch.targets.shape) * batch.mask).sum(-1)
    return (gaussian_kl(loc, log_scale) + nll).sum() / batch.size


def setup(args):
    if args.story == "nvdm":
        train = (
            load_dataset("20news", args.data_dir) if args.data == "20news" else synthetic_nvdm_corpus()[0]
        )["train"]
        V = len(train.vocab)
        story, guide = NVDM(V, 50), NormalGuide(V, 50, hidden=[500], activation="tanh")
        return story, guide, list(train.batches(64, shuffle=True, seed=0)), plain_nvdm_loss, 5e-4
    train = load_dataset("ptb", args.data_dir)["train"]
    V = len(train.vocab)
    story, guide = LSTMVAE(V, 13, 353, 191), SentenceGuide(V, 13, 353, 191)
    batches = list(train.batches(32, shuffle=True, seed=0))[: args.batches]
    return story, guide, batches, plain_lstm_vae_loss, 1e-3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--story", default="nvdm", choices=["nvdm", "lstm-vae"])
    p.add_argument("--data", default="20news", choices=["20news", "synthetic"], help="nvdm only")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=9, help="timed epochs of each loop")
    p.add_argument("--batches", type=int, default=60, help="lstm-vae: PTB batches per epoch")
    p.add_argument(
        "--block", type=int, default=20, help="batches each loop runs before the next takes its turn"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, epochs=1, batches=3) as args:
        return benchmark(args)


def timed_loops(story, guide, batches, plain_loss, lr, epochs: int, block: int):
    """Per-epoch seconds and mean losses of the three loops, taking turns block by block."""
    loops = {}
    for name in ("fabula", "fabula+validation"):
        inf = Amortized(copy.deepcopy(story), copy.deepcopy(guide), optim_args={"lr": lr})

        def fabula_step(b, inf=inf, on=(name == "fabula+validation")):
            with pyro.validation_enabled(on):
                return inf.step(b)["loss"]

        loops[name] = fabula_step
    plain_story, plain_guide = copy.deepcopy(story), copy.deepcopy(guide)
    plain_opt = torch.optim.Adam([*plain_story.parameters(), *plain_guide.parameters()], lr=lr)

    def plain_step(b):
        loss = plain_loss(plain_story, plain_guide, b)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()
        return loss.item()

    loops["plain"] = plain_step
    times = {name: [] for name in loops}
    losses = {name: [] for name in loops}
    order = list(loops)
    blocks = [batches[i : i + block] for i in range(0, len(batches), block)]
    for epoch in range(epochs + 1):  # epoch 0 warms up every loop
        torch.manual_seed(epoch)
        spent = dict.fromkeys(loops, 0.0)
        total = dict.fromkeys(loops, 0.0)
        for i, chunk in enumerate(blocks):
            # the loops take turns block by block (in rotating order), so that a change in the
            # machine's load falls on all of them alike
            for name in order[i % 3 :] + order[: i % 3]:
                for b in chunk:
                    start = time.perf_counter()
                    total[name] += loops[name](b)
                    spent[name] += time.perf_counter() - start
        if epoch:
            for name in loops:
                times[name].append(spent[name])
                losses[name].append(total[name] / len(batches))
    return times, losses


def fixed_cost(args) -> dict:
    """Median milliseconds per step of the three loops on a tiny NVDM (see the module docstring)."""
    torch.manual_seed(0)
    train = synthetic_nvdm_corpus(num_train=640, vocab_size=20)[0]["train"]
    story, guide = NVDM(20, 4), NormalGuide(20, 4, hidden=[8], activation="tanh")
    batches = list(train.batches(64, shuffle=True, seed=0))
    times, _ = timed_loops(story, guide, batches, plain_nvdm_loss, 5e-4, max(3, args.epochs), 5)
    return {k: 1000 * statistics.median(v) / len(batches) for k, v in times.items()}


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    story, guide, batches, plain_loss, lr = setup(args)
    times, losses = timed_loops(story, guide, batches, plain_loss, lr, args.epochs, args.block)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["fabula"] / med["plain"]
    ratio_validated = med["fabula+validation"] / med["plain"]
    tokens = sum(int(b.lengths.sum()) for b in batches)
    results = {
        "story": args.story,
        "batches": len(batches),
        "tokens_per_epoch": tokens,
        "epoch_seconds": times,
        "median_epoch_seconds": med,
        "ratio": ratio,
        "ratio_with_validation": ratio_validated,
        "mean_loss_last_epoch": {k: v[-1] for k, v in losses.items()},
    }
    floor = ""
    if args.story == "nvdm":
        results["tiny_ms_per_step"] = tiny = fixed_cost(args)
        floor = (
            f" On a tiny NVDM (20 words, z=4) a step takes {tiny['fabula']:.3f} ms through fabula, "
            f"{tiny['plain']:.3f} ms in plain PyTorch: a fixed {tiny['fabula'] - tiny['plain']:.3f} ms per "
            f"step of Pyro's tracing ({1000 * med['fabula'] / len(batches) - 1000 * med['plain'] / len(batches):.3f} "
            "ms at these sizes)."
        )
    table = "\n".join(
        [
            "| loop | median epoch (s) | ms/step | tokens/s | mean loss, last epoch |",
            "|---|---|---|---|---|",
            *[
                f"| {k} | {med[k]:.2f} | {1000 * med[k] / len(batches):.2f} | {tokens / med[k]:.0f} | {losses[k][-1]:.2f} |"
                for k in med
            ],
            "",
            f"Ratio fabula / plain PyTorch: **{ratio:.3f}** (target <= 1.15); with Pyro validation on: "
            f"{ratio_validated:.3f}. Medians of {args.epochs} epochs of {len(batches)} batches, the loops "
            f"taking turns in blocks of {args.block} batches." + floor,
        ]
    )
    print(table)
    if not args.no_record:
        record(f"overhead_{args.story}", results, table)
    return results


if __name__ == "__main__":
    main()
