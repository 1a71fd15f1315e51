"""Fit one story with several inference objects on the same data and seed, and compare them
on one table (Kim et al. 2018, Table 1): NLL bound, KL, perplexity, wall time, steps/s."""

from __future__ import annotations

import time

import pyro
import torch

from fabula.evaluation import evaluate
from fabula.inference import Amortized, AmortizedSVI, Refinement, SemiAmortized, StochasticVI
from fabula.inference.annealing import parse_schedule

INFERENCE_KINDS = {
    "vae": Amortized,
    "svi": StochasticVI,
    "vae+svi": AmortizedSVI,
    "sa-vae": SemiAmortized,
    "sa-vae-fd": SemiAmortized,
}


def parse_inference(spec: str, refinement_lr: float = 0.1):
    """``"vae"``, ``"svi:K"``, ``"vae+svi:K"``, ``"sa-vae:K"`` (exact Hessian-vector products) or
    ``"sa-vae-fd:K"`` (finite-difference ones) -> (inference class, settings)."""
    name, _, steps = spec.partition(":")
    if name not in INFERENCE_KINDS:
        raise ValueError(f"unknown inference {spec!r}; use vae, svi:K, vae+svi:K, sa-vae:K or sa-vae-fd:K")
    if name == "vae":
        if steps:
            raise ValueError(f"{spec!r}: plain amortized VI takes no refinement steps")
        return Amortized, {}
    if not steps.isdigit():
        raise ValueError(f"{spec!r}: give the refinement steps, e.g. {name}:20")
    hvp = "finite-difference" if name == "sa-vae-fd" else "exact"
    return INFERENCE_KINDS[name], {"refinement": Refinement(steps=int(steps), lr=refinement_lr, hvp=hvp)}


def compare(
    build,
    splits,
    specs,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    iw_samples: int = 100,
    lr: float = 1e-3,
    refinement_lr: float = 0.1,
    progress: bool = True,
    learn_story: bool = True,
    anneal: str | None = None,
) -> dict[str, dict]:
    """Train a fresh ``build()`` (story, guide) pair with each inference spec, from the same
    initial weights and seed, and evaluate each on ``splits["test"]`` with the negative ELBO
    (10 samples of its reconstruction term) and the IW bound. With ``learn_story=False`` the
    story is held fixed (only guides are trained; per-instance SVI then trains nothing). ``anneal``
    is a KL-annealing schedule (e.g. ``"linear:2000"``) for every spec's training objective."""
    rows = {}
    for spec in specs:
        kind, settings = parse_inference(spec, refinement_lr)
        torch.manual_seed(seed)
        story, guide = build()
        inference = kind(
            story,
            guide,
            optim_args={"lr": lr},
            clip_norm=5.0,
            learn_story=learn_story,
            annealing=parse_schedule(anneal) if anneal else None,
            **settings,
        )
        pyro.set_rng_seed(seed)
        start = time.perf_counter()
        history = [{"loss": float("nan")}]
        if inference.params:
            with pyro.validation_enabled(False):
                history = inference.fit(
                    splits["train"], epochs=epochs, batch_size=batch_size, seed=seed, progress=progress
                )
        seconds = time.perf_counter() - start
        report = evaluate(inference, splits["test"], "iw", iw_samples).summary()
        elbo = evaluate(inference, splits["test"], "elbo", 10).summary()
        rows[spec] = {
            "nll_elbo": elbo["nll"],
            "nll": report["nll"],
            "kl": report["kl"],
            "perplexity": report.get("corpus_perplexity"),
            "train_seconds": seconds,
            "steps_per_second": inference.num_steps / seconds if inference.num_steps else 0.0,
            "train_loss": history[-1]["loss"],
            "estimator": f"iw (S={iw_samples})",
        }
    return rows


def markdown(rows: dict[str, dict], reference: dict | None = None) -> str:
    lines = [
        "| inference | -ELBO | NLL bound (IW) | KL | PPL | train s | steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, r in rows.items():
        ppl = f"{r['perplexity']:.1f}" if r["perplexity"] is not None else ""
        lines.append(
            f"| {spec} | {r['nll_elbo']:.2f} | {r['nll']:.2f} | {r['kl']:.2f} | {ppl} | {r['train_seconds']:.1f} | "
            f"{r['steps_per_second']:.1f} |"
        )
    if reference is not None:
        lines.append(f"| generating model | | {reference['nll']:.2f} | {reference['kl']:.2f} | | | |")
    return "\n".join(lines)
