"""Fit one story with several inference kinds on the same data and seed, and compare them on
one table (Kim et al. 2018, Table 1): NLL bound, KL, perplexity, wall time, steps/s. An
undirected story (the RSM) has no bound or KL: its rows give the NLL by its own estimator (AIS)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyro
import torch

from fabula.errors import SettingsError
from fabula.evaluation import ImportanceWeighted, default_estimator, evaluate
from fabula.evaluation.estimators import spec_of
from fabula.inference import VariationalInference
from fabula.inference.annealing import FORMS, parse_schedule
from fabula.inference.kinds import Setup, build, trainable
from fabula.models.capabilities import Undirected
from fabula.settings import COUNT, POSITIVE, SEED, check_ranges, setting


@dataclass
class CompareSettings:
    """Comparison: the inference kinds, their shared training budget and the evaluation"""

    inference: tuple[str, ...] = setting(
        ("vae", "svi:20", "vae+svi:20", "sa-vae:20"), "inference kinds (specs of the registry) to compare"
    )
    epochs: int = setting(2, "epochs per inference kind", within=COUNT)
    batch_size: int = setting(50, "data per step", within=COUNT)
    train_size: int | None = setting(500, "training data used (the first N; unset: all)", within=COUNT)
    test_size: int | None = setting(200, "test data evaluated (the first N; unset: all)", within=COUNT)
    lr: float = setting(1e-3, "Adam learning rate", within=POSITIVE)
    refinement_lr: float = setting(0.1, "step size of the K refinement steps", within=POSITIVE)
    anneal: str | None = setting(None, f"KL annealing for every inference kind: {FORMS}")
    samples: int = setting(100, "IW samples for the NLL bound", within=COUNT)
    seed: int = setting(0, "random seed", within=SEED)

    def __post_init__(self):
        check_ranges(self)
        if not self.inference:
            raise SettingsError("--inference needs at least one inference kind")
        for spec in self.inference:
            trainable(spec)
        if self.anneal:
            parse_schedule(self.anneal)


def _setup(build_pair, splits, settings: CompareSettings, objective, learn_story: bool) -> Setup:
    story, guide = build_pair()
    annealing = parse_schedule(settings.anneal) if settings.anneal else None
    return Setup(
        story,
        guide,
        objective=objective,
        training={
            "optim_args": {"lr": settings.lr},
            "clip_norm": 5.0,
            "learn_story": learn_story,
            "annealing": annealing,
        },
        refinement={"lr": settings.refinement_lr},
        data=splits,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )


def _trains_something(inference) -> bool:
    return not isinstance(inference, VariationalInference) or bool(inference.trainer.optimizers)


def estimate_seconds(build_pair, splits, settings: CompareSettings, objective=None, learn_story=True) -> dict:
    """Seconds each kind's training will take, from the time of two steps of a throwaway copy."""
    out = {}
    for spec in settings.inference:
        torch.manual_seed(settings.seed)
        inference = build(spec, _setup(build_pair, splits, settings, objective, learn_story))
        device = inference.story.device
        first = next(
            splits["train"].batches(settings.batch_size, shuffle=True, seed=settings.seed, device=device)
        )
        if not _trains_something(inference):
            out[spec] = 0.0
            continue
        with pyro.validation_enabled(False):
            inference.step(first)
            start = time.perf_counter()
            inference.step(first)
        per_step = time.perf_counter() - start
        out[spec] = per_step * splits["train"].num_batches(settings.batch_size) * settings.epochs
    return out


def compare(
    build_pair, splits, settings: CompareSettings, objective=None, learn_story=True, progress=True
) -> dict:
    """Train a fresh ``build_pair()`` (story, guide) with each inference kind, from the same
    initial weights and seed, and evaluate each on ``splits["test"]`` with the negative ELBO (10
    samples of its reconstruction term) and the IW bound; an undirected story, which has neither,
    with its default estimator (:func:`~fabula.evaluation.default_estimator`: AIS for the RSM).
    With ``learn_story=False`` only λ is fitted (per-instance SVI then trains nothing)."""
    rows = {}
    for spec in settings.inference:
        torch.manual_seed(settings.seed)
        inference = build(spec, _setup(build_pair, splits, settings, objective, learn_story))
        pyro.set_rng_seed(settings.seed)
        start = time.perf_counter()
        history = [{"loss": float("nan")}]
        if _trains_something(inference):
            with pyro.validation_enabled(False):
                history = inference.fit(
                    splits["train"], settings.epochs, settings.batch_size, settings.seed, progress=progress
                )
        seconds = time.perf_counter() - start
        if isinstance(inference.story, Undirected):
            estimator, elbo = default_estimator(inference.story), None
        else:
            estimator = ImportanceWeighted(settings.samples)
            elbo = evaluate(inference, splits["test"], "elbo:10").summary()["nll"]
        report = evaluate(inference, splits["test"], estimator).summary()
        rows[spec] = {
            "nll_elbo": elbo,
            "nll": report["nll"],
            "kl": report.get("kl"),
            "perplexity": report.get("corpus_perplexity"),
            "train_seconds": seconds,
            "steps_per_second": inference.num_steps / seconds if inference.num_steps else 0.0,
            "train_loss": history[-1]["loss"],
            "estimator": spec_of(estimator),
        }
    return rows


def markdown(rows: dict[str, dict], reference: dict | None = None) -> str:
    lines = [
        "| inference | -ELBO | NLL (estimator) | KL | PPL | train s | steps/s |",
        "|---|---|---|---|---|---|---|",
    ]

    def figure(value, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for spec, r in rows.items():
        lines.append(
            f"| {spec} | {figure(r['nll_elbo'], 2)} | {r['nll']:.2f} ({r['estimator']}) | {figure(r['kl'], 2)} | "
            f"{figure(r['perplexity'], 1)} | {r['train_seconds']:.1f} | {r['steps_per_second']:.1f} |"
        )
    if reference is not None:
        estimator = f"{reference['estimator']}:{reference['samples']}"
        lines.append(
            f"| generating model | | {reference['nll']:.2f} ({estimator}) | {reference['kl']:.2f} | | | |"
        )
    return "\n".join(lines)
