"""Effective samples per second of NUTS with fabula's NumPyro backend against Pyro's NUTS, on
the same posteriors p(z | x) of trained stories: an NVDM on 20 Newsgroups (z = 50), the
LSTM-VAE that generates the synthetic oracle corpus (its posteriors are informative by
construction; a guide is fitted to its corpus), and any trained LSTM-VAE runs given (e.g.
Bowman et al.'s PTB model). Both backends get the same number of CPU threads (``--threads``;
XLA is told so too).

For each of ``--items`` test documents, both backends sample one chain with the same warmup and
draws from the guide's posterior mean; ESS is ArviZ's bulk ESS, the minimum over the latent
coordinates; ESS/s divides it by the sampling time (warmup included). NumPyro's compile time is
reported apart. A last row runs NumPyro on all items at once (one vectorized program, a chain
per datum) and divides the summed ESS by its time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from types import SimpleNamespace

import torch

from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.diagnostics import az
from fabula.inference import MCMC
from fabula.run import TrainConfig, fit_reference, load_run, train
from results_log import record, session, synthetic_sizes


def min_ess(draws: torch.Tensor) -> torch.Tensor:
    """Bulk ESS per datum, minimum over coordinates, of ``draws [chain, draw, B, K]``."""
    ess = az.ess(az.convert_to_dataset({"z": draws.cpu().numpy()}))["z"].values  # [B, K]
    return torch.as_tensor(ess).amin(-1)


def oracle_run(seed: int = 0, **sizes) -> SimpleNamespace:
    """The SA-VAE synthetic oracle (an LSTM-VAE with z in 2-d) and its test split, with a guide
    fitted to its training split: a posterior that is not collapsed, with no training of the story.
    ``sizes``: the corpus's split sizes (see ``synthetic_sentence_corpus``)."""
    data, oracle = synthetic_sentence_corpus(seed, **sizes)
    return SimpleNamespace(
        inference=fit_reference(oracle, "sentences", data["train"], seed, progress=False), splits=data
    )


def measure(run, items: int, warmup: int, samples: int) -> dict:
    story, guide = run.inference.story, run.inference.guide
    test = run.splits["test"]
    rows = {"pyro": [], "numpyro": []}
    for item in range(items):
        batch = test.batch(torch.tensor([item]))
        for backend in rows:
            mcmc = MCMC(story, guide, samples, warmup, 1, progress=False, backend=backend, seed=item)
            chains = mcmc.run(batch)
            ess = float(min_ess(chains.samples["z"]))
            seconds = mcmc.seconds["sample"]
            steps = float(chains.stats["n_steps"].float().mean())
            rows[backend].append(
                {"ess": ess, "seconds": seconds, "compile": mcmc.seconds["compile"], "leapfrogs": steps}
            )
    vector = MCMC(story, guide, samples, warmup, 1, progress=False, backend="numpyro")
    chains = vector.run(test.batch(torch.arange(items)))
    rows["numpyro, all items vectorized"] = [
        {
            "ess": float(min_ess(chains.samples["z"]).sum()),
            "seconds": vector.seconds["sample"],
            "compile": vector.seconds["compile"],
            "leapfrogs": float(chains.stats["n_steps"].float().mean()),
        }
    ]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nvdm-run", help="a trained NVDM run (default: train one on 20news, z=50)")
    p.add_argument("--nvdm-epochs", type=int, default=20, help="epochs of that NVDM (default: 20)")
    p.add_argument(
        "--lstm-run",
        nargs="*",
        default=[],
        help="trained LSTM-VAE runs, measured after the synthetic oracle's own LSTM-VAE",
    )
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--items", type=int, default=5, help="test documents, one posterior each (default: 5)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, nvdm_epochs=1, items=1, warmup=10, samples=10) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    # XLA's CPU backend uses every core unless told otherwise: give both backends the same threads
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={str(args.threads > 1).lower()} intra_op_parallelism_threads={args.threads}"
    )
    nvdm = TrainConfig.create("nvdm", data="20news", data_dir=args.data_dir, epochs=args.nvdm_epochs, lr=5e-4)
    if args.nvdm_run:
        nvdm_run = args.nvdm_run
    else:
        nvdm_run = tempfile.mkdtemp(prefix="mcmc-nvdm-")
        train(nvdm, nvdm_run)
    runs = {"nvdm": (nvdm_run, lambda: load_run(nvdm_run, data_dir=args.data_dir))}
    runs["lstm-vae, synthetic oracle"] = (
        "the oracle's generative model",
        lambda: oracle_run(**synthetic_sizes(args)),
    )
    for path in args.lstm_run:
        runs[f"lstm-vae ({path})"] = (path, lambda path=path: load_run(path, data_dir=args.data_dir))
    results, lines = {}, []
    header = "| posterior | backend | min bulk ESS | sampling s | ESS/s | leapfrogs/draw | compile s |"
    for name, (path, load) in runs.items():
        rows = measure(load(), args.items, args.warmup, args.samples)
        results[name] = {"run": path, "rows": rows}
        lines += [f"**{name}** ({path})", "", header, "|---|---|---|---|---|---|---|"]
        for backend, rs in rows.items():
            for r in rs:
                r["ess_per_s"] = r["ess"] / r["seconds"]
            med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            lines.append(
                f"| {name} | {backend} | {med['ess']:.0f} | {med['seconds']:.2f} | {med['ess_per_s']:.1f} | "
                f"{med['leapfrogs']:.1f} | {med['compile']:.1f} |"
            )
        ratios = [n["ess_per_s"] / p["ess_per_s"] for n, p in zip(rows["numpyro"], rows["pyro"], strict=True)]
        results[name]["ratio_per_item"] = ratios
        lines += [
            "",
            f"NumPyro / Pyro ESS/s per item: {', '.join(f'{r:.1f}' for r in ratios)}; "
            f"median **{statistics.median(ratios):.1f}x** (compile time excluded).",
            "",
        ]
    table = "\n".join(lines) + (
        f"\nMedians over {args.items} test items, one chain each, {args.warmup} warmup + {args.samples} draws."
    )
    print(table)
    if not args.no_record:
        record("mcmc_backends", results, table)
    return results


if __name__ == "__main__":
    main()
