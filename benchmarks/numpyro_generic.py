"""Effective samples per second per document of NumPyro's NUTS through fabula's generic twin (the
story's own torch log joint called from JAX, ``fabula.backends.callback``) against the hand-written
JAX twin and Pyro's NUTS, on the posteriors p(z | x) of benchmarks/mcmc_backends.py: an NVDM on
20 Newsgroups (z = 50) and the LSTM-VAE that generates the synthetic oracle corpus (z = 2,
informative posteriors by construction; a guide is fitted to its corpus).

Both NumPyro forms sample all ``--items`` test documents in one vectorized run, ``--chains``
chains per document, each with its own adaptation; Pyro's NUTS samples as many chains per
document, one after another, for the first ``--pyro-items`` of them (it is the slow one, and its
cost per document does not depend on how many are sampled). All start at the guide's posterior
mean, with the same warmup and draws. More chains per document make ESS at a cost proportional
to them for Pyro, while a vectorized call serves more lanes for its fixed cost.

A document's ESS is ArviZ's bulk ESS of its chains, the **minimum over its latent coordinates**; its
ESS/s divides that by the seconds spent on it: for a vectorized run, the run's compile plus
sampling time (warmup included) over the number of documents; for Pyro, its own chains' time.
Rows give medians over documents, and ratios are of those medians; against Pyro, the median of
per-document ratios on the documents both sampled is given beside them. Torch and XLA get the same
CPU threads (``--threads``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

import torch
from mcmc_backends import min_ess, oracle_run

from fabula.inference import MCMC
from fabula.inference.kernels import NumPyroNUTS
from fabula.run import TrainConfig, load_run, train
from results_log import record, session, synthetic_sizes

GENERIC, HAND, PYRO = "numpyro, generic twin", "numpyro, hand twin", "pyro"
POSTERIORS = ("nvdm", "lstm-vae")
TWIN_ROWS = {"generic": GENERIC, "hand": HAND}


def measure(run, twins, items: int, pyro_items: int, warmup: int, samples: int, num_chains: int) -> dict:
    """Per-document ESS and seconds of each sampler (the NumPyro ``twins`` and Pyro) on the first
    test documents of ``run``."""
    story, guide = run.inference.story, run.inference.guide
    test = run.splits["test"]
    rows = {}
    for twin in twins:
        name = TWIN_ROWS[twin]
        mcmc = MCMC(story, guide, samples, warmup, num_chains, progress=False, kernel=NumPyroNUTS(twin=twin))
        chains = mcmc.run(test.batch(torch.arange(items)))
        assert chains.info["twin"] == twin
        total = mcmc.seconds["compile"] + mcmc.seconds["sample"]
        rows[name] = {
            "ess": min_ess(chains.samples["z"]).tolist(),
            "seconds": [total / items] * items,
            "compile": mcmc.seconds["compile"],
            "total": total,
            "leapfrogs": float(chains.stats["n_steps"].float().mean()),
        }
    pyro = {"ess": [], "seconds": [], "compile": 0.0, "leapfrogs": []}
    for item in range(pyro_items):
        mcmc = MCMC(story, guide, samples, warmup, num_chains, progress=False, backend="pyro", seed=item)
        chains = mcmc.run(test.batch(torch.tensor([item])))
        pyro["ess"].append(float(min_ess(chains.samples["z"])))
        pyro["seconds"].append(mcmc.seconds["sample"])
        pyro["leapfrogs"].append(float(chains.stats["n_steps"].float().mean()))
    pyro["total"], pyro["leapfrogs"] = sum(pyro["seconds"]), statistics.mean(pyro["leapfrogs"])
    rows[PYRO] = pyro
    for row in rows.values():
        row["ess_per_s"] = [e / s for e, s in zip(row["ess"], row["seconds"], strict=True)]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nvdm-run", help="a trained NVDM run (default: train one on 20news, z=50)")
    p.add_argument("--nvdm-epochs", type=int, default=20, help="epochs of that NVDM (default: 20)")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--items", type=int, default=100, help="test documents, one posterior each (default: 100)")
    p.add_argument("--pyro-items", type=int, default=30, help="of those, sampled by Pyro (default: 30)")
    p.add_argument("--chains", type=int, default=1, help="chains per document, every sampler (default: 1)")
    for flag, options, what in (
        ("--posteriors", POSTERIORS, "posteriors sampled"),
        ("--twins", TWIN_ROWS, "NumPyro twins sampled beside Pyro"),
    ):
        p.add_argument(
            flag, nargs="+", default=list(options), choices=list(options), help=f"the {what} (default: all)"
        )
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, nvdm_epochs=1, items=3, pyro_items=1, warmup=10, samples=10) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    # XLA's CPU backend uses every core unless told otherwise: give every sampler the same threads
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={str(args.threads > 1).lower()} intra_op_parallelism_threads={args.threads}"
    )
    runs = {}
    if "nvdm" in args.posteriors:
        if args.nvdm_run:
            nvdm_run = args.nvdm_run
        else:
            nvdm_run = tempfile.mkdtemp(prefix="numpyro-generic-nvdm-")
            nvdm = TrainConfig.create(
                "nvdm", data="20news", data_dir=args.data_dir, epochs=args.nvdm_epochs, lr=5e-4
            )
            train(nvdm, nvdm_run, progress=False)
        runs["nvdm"] = (nvdm_run, lambda: load_run(nvdm_run, data_dir=args.data_dir))
    if "lstm-vae" in args.posteriors:
        runs["lstm-vae, synthetic oracle"] = (
            "the oracle's generative model",
            lambda: oracle_run(**synthetic_sizes(args)),
        )
    header = (
        "| posterior | sampler | documents | min bulk ESS | s per document | ESS/s per document | "
        "leapfrogs/draw | compile s | total s |"
    )
    results, lines = {}, []
    for name, (path, load) in runs.items():
        rows = measure(
            load(), args.twins, args.items, args.pyro_items, args.warmup, args.samples, args.chains
        )
        lines += [f"**{name}** ({path})", "", header, "|---|---|---|---|---|---|---|---|---|"]
        medians = {}
        for sampler, r in rows.items():
            med = {k: statistics.median(r[k]) for k in ("ess", "seconds", "ess_per_s")}
            medians[sampler] = med["ess_per_s"]
            lines.append(
                f"| {name} | {sampler} | {len(r['ess'])} | {med['ess']:.0f} | {med['seconds']:.3f} | "
                f"{med['ess_per_s']:.1f} | {r['leapfrogs']:.1f} | {r['compile']:.1f} | {r['total']:.1f} |"
            )
        pairs = {
            "generic / pyro": (GENERIC, PYRO),
            "hand / pyro": (HAND, PYRO),
            "generic / hand": (GENERIC, HAND),
        }
        ratios = {k: medians[a] / medians[b] for k, (a, b) in pairs.items() if a in medians and b in medians}
        # the same documents: Pyro sampled the first of them
        paired = {
            k: statistics.median(
                x / y
                for x, y in zip(
                    rows[a]["ess_per_s"][: len(rows[b]["ess_per_s"])], rows[b]["ess_per_s"], strict=True
                )
            )
            for k, (a, b) in pairs.items()
            if b == PYRO and a in rows
        }
        results[name] = {"run": path, "rows": rows, "ratios": ratios, "paired_ratios": paired}
        lines += [
            "",
            "ESS/s per document: "
            + "; ".join(
                f"{k} **{v:.1f}x**" + (f" (same documents: {paired[k]:.1f}x)" if k in paired else "")
                for k, v in ratios.items()
            ),
            "",
        ]
    table = "\n".join(lines) + (
        f"\nMedians over documents; ESS is the minimum over latent coordinates. {args.items} test documents "
        f"per NumPyro run ({args.chains} chain(s) each, compile and warmup included in its seconds), the "
        f"first {args.pyro_items} of them for Pyro ({args.chains} chain(s) each); {args.warmup} warmup + "
        f"{args.samples} draws per chain."
    )
    print(table)
    if not args.no_record:
        record("numpyro_generic", results, table)
    return results


if __name__ == "__main__":
    main()
