"""How close each variational posterior comes to p(z | x), judged against NUTS: PSIS k-hat of q
and q's error against a NUTS reference, for the same trained story and test items.

Inference objects (all over the run's own story, so that the posterior is the same):
  vae     the run's amortized guide, λ = enc(x);
  svi     per-datum SVI from the prior, ``--svi-steps`` refinement steps (Hoffman et al. 2013);
  refine  test-time refinement: enc(x) refined by ``--steps`` gradient steps, SA-VAE's inference
          (Kim et al. 2018) applied to the run's VAE-trained encoder (rows "sa-vae" before the
          registry named it).
The reference is NumPyro NUTS (fabula's JAX twin of the story), ``--chains`` chains per item;
its largest r-hat is reported. Errors: mean error in NUTS standard deviations, |log variance
ratio|, and the KL of the moment-matched diagonal Gaussians (fabula.diagnostics.posterior_error).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from fabula.diagnostics import az, posterior_error, psis_khat
from fabula.inference import MCMC, Refinement, StochasticVI, refined
from fabula.run import TrainConfig, load_run, train
from results_log import record, session


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "runs",
        nargs="*",
        help="NAME=RUN_DIR of trained NVDM / LSTM-VAE runs (--smoke: tiny ones trained here)",
    )
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--items", type=int, default=10, help="test items (default: 10)")
    p.add_argument("--samples", type=int, default=500, help="draws from q and per NUTS chain")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="refine: refinement steps (default: 20)")
    p.add_argument("--svi-steps", type=int, default=100, help="svi refinement steps (default: 100)")
    p.add_argument("--refinement-lr", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, items=2, samples=10, warmup=10, steps=2, svi_steps=2) as args:
        if not args.runs:
            if not args.smoke:
                p.error("the following arguments are required: runs")
            args.runs = smoke_runs(args.data_dir)
        return benchmark(args)


def smoke_runs(data_dir: str) -> list[str]:
    """``NAME=RUN_DIR`` of an NVDM with tiny sizes trained one epoch on 20news (for ``--smoke``;
    ``mcmc_backends.py --smoke`` samples an LSTM-VAE's posterior)."""
    out = tempfile.mkdtemp(prefix="posterior-quality-20news-")
    config = TrainConfig.create(
        "nvdm", data="20news", data_dir=data_dir, epochs=1, latent_dim=3, hidden=(16,)
    )
    train(config, out, progress=False)
    return [f"20news={out}"]


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    results, lines = {}, []
    header = "| data | q | PSIS k-hat | mean error (NUTS sd) | abs log var ratio | KL (nats) |"
    for spec in args.runs:
        name, _, path = spec.partition("=")
        run = load_run(path, data_dir=args.data_dir)
        story, guide = run.inference.story, run.inference.guide
        batch = run.splits["test"].batch(torch.arange(args.items))
        nuts = MCMC(story, guide, args.samples, args.warmup, args.chains, backend="numpyro")
        chains = nuts.run(batch)
        reference = chains.samples["z"].flatten(0, 1)
        rhat = float(az.rhat(az.convert_to_dataset({"z": chains.samples["z"].numpy()}))["z"].max())
        inferences = {
            "vae": run.inference,
            f"svi:{args.svi_steps}": StochasticVI(
                story, guide, Refinement(steps=args.svi_steps, lr=args.refinement_lr), learn_story=False
            ),
            f"refine:{args.steps}": refined(
                run.inference, Refinement(steps=args.steps, lr=args.refinement_lr)
            ),
        }
        rows = {}
        for label, inference in inferences.items():
            torch.manual_seed(0)
            draws = inference.posterior(batch, args.samples)["z"].detach()
            khat = psis_khat(inference, batch, args.samples)
            error = posterior_error(draws, reference)
            rows[label] = {"khat": khat.tolist(), **{k: v.tolist() for k, v in error.items()}}
        results[name] = {"run": path, "nuts_max_rhat": rhat, "nuts_seconds": nuts.seconds, "rows": rows}
        lines += [
            f"**{name}** ({path}): NUTS reference max r-hat {rhat:.3f}",
            "",
            header,
            "|---|---|---|---|---|---|",
        ]
        for label, r in rows.items():
            med = {k: statistics.median(v) for k, v in r.items()}
            lines.append(
                f"| {name} | {label} | {med['khat']:.2f} | {med['mean_error']:.3f} | "
                f"{med['log_var_ratio']:.3f} | {med['kl']:.3f} |"
            )
        lines.append("")
    table = "\n".join(lines) + (
        f"\nMedians over test items 0-{args.items - 1}; {args.samples} draws from each q; NUTS "
        f"{args.chains} x ({args.warmup} warmup + {args.samples}) per item; refinement lr {args.refinement_lr}."
    )
    print(table)
    if not args.no_record:
        record("posterior_quality_" + "_".join(results), results, table)
    return results


if __name__ == "__main__":
    main()
