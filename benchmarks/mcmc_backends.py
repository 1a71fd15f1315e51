"""Effective samples per second of NUTS with fabula's NumPyro backend against Pyro's NUTS, on
the same posteriors p(z | x) of trained stories: an NVDM on 20 Newsgroups (z = 50) and an
LSTM-VAE (Bowman et al.'s PTB model, or one fitted to the synthetic oracle corpus). Both
backends get the same number of CPU threads (``--threads``; XLA is told so too).

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

import torch

from fabula.diagnostics import az
from fabula.inference import MCMC
from fabula.runs import TrainConfig, load_run, train
from results_log import record


def min_ess(draws: torch.Tensor) -> torch.Tensor:
    """Bulk ESS per datum, minimum over coordinates, of ``draws [chain, draw, B, K]``."""
    ess = az.ess(az.convert_to_dataset({"z": draws.cpu().numpy()}))["z"].values  # [B, K]
    return torch.as_tensor(ess).amin(-1)


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
        help="trained LSTM-VAE runs (default: train one on the synthetic oracle corpus)",
    )
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--items", type=int, default=5, help="test documents, one posterior each (default: 5)")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # XLA's CPU backend uses every core unless told otherwise: give both backends the same threads
    os.environ["XLA_FLAGS"] = (
        f"--xla_cpu_multi_thread_eigen={str(args.threads > 1).lower()} intra_op_parallelism_threads={args.threads}"
    )
    nvdm = TrainConfig(story="nvdm", data="20news", data_dir=args.data_dir, epochs=args.nvdm_epochs, lr=5e-4)
    oracle = TrainConfig(
        story="lstm-vae", epochs=5, latent_dim=2, embed_dim=100, hidden_dim=100, anneal="linear:500"
    )
    runs = {}
    for name, given, config in (
        ("nvdm", [args.nvdm_run] if args.nvdm_run else [], nvdm),
        ("lstm-vae", args.lstm_run, oracle),
    ):
        if not given:
            given = [tempfile.mkdtemp(prefix=f"mcmc-{name}-")]
            train(config, given[0])
        for path in given:
            runs[f"{name} ({path})" if len(given) > 1 else name] = path
    results, lines = {}, []
    header = "| posterior | backend | min bulk ESS | sampling s | ESS/s | leapfrogs/draw | compile s |"
    for name, path in runs.items():
        rows = measure(load_run(path, data_dir=args.data_dir), args.items, args.warmup, args.samples)
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


if __name__ == "__main__":
    main()
