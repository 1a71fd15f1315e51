"""Fit one story with several inference kinds on the same data and seed, and compare them on
one table (Kim et al. 2018, Table 1): NLL bound, KL, perplexity, wall time, steps/s, and the
flags a reader must see first (a collapsed q, a fit far from the generating model's NLL). Each
kind is built from the same run configuration's plan as ``fabula train`` builds it. An
undirected story (the RSM) has no bound or KL: its rows give the NLL by its own estimator (AIS)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import pyro
import torch

from fabula.errors import SettingsError
from fabula.evaluation import ImportanceWeighted, default_estimator, evaluate
from fabula.evaluation.estimators import spec_of
from fabula.inference import VariationalInference
from fabula.inference.kinds import build, trainable
from fabula.models.capabilities import Undirected
from fabula.run.config import TrainConfig, objective_of
from fabula.run.plan import inference_setup
from fabula.settings import COUNT, check_ranges, setting


@dataclass
class CompareSettings:
    """Comparison: the inference kinds, the data they share and the evaluation (their training
    is the run's configuration: epochs, batch size, optimizer, annealing, seed)"""

    inference: tuple[str, ...] = setting(
        ("vae", "svi:20", "vae+svi:20", "sa-vae:20"), "inference kinds (specs of the registry) to compare"
    )
    train_size: int | None = setting(500, "training data used (the first N; unset: all)", within=COUNT)
    test_size: int | None = setting(200, "test data evaluated (the first N; unset: all)", within=COUNT)
    samples: int = setting(100, "IW samples for the NLL bound", within=COUNT)

    def __post_init__(self):
        check_ranges(self)
        if not self.inference:
            raise SettingsError("--inference needs at least one inference kind")
        for spec in self.inference:
            trainable(spec)


COMPARE_DEFAULTS = {
    "inference": {"anneal": None},
    "optimizer": {"clip_norm": 5.0},
    "run": {"epochs": 2, "batch_size": 50},
}
"""Where a comparison's training differs from a story's own defaults: a short first try, no KL
annealing, gradients clipped."""


def _trains_something(inference) -> bool:
    return not isinstance(inference, VariationalInference) or bool(inference.trainer.optimizers)


def _build(config: TrainConfig, spec: str, build_pair, splits, learn_story: bool):
    """The inference object of ``spec`` for a fresh ``build_pair()``, from the plan of the run
    ``config`` with that kind (:func:`~fabula.run.plan.inference_setup`)."""
    story, guide = build_pair()
    kind = replace(config, inference=replace(config.inference, inference=spec))
    setup = inference_setup(kind, story, guide, splits)
    if not learn_story:
        setup = replace(setup, training=replace(setup.training, learn_story=False))
    return build(spec, setup)


def estimate_seconds(
    config: TrainConfig, build_pair, splits, settings: CompareSettings, learn_story=True
) -> dict:
    """Seconds each kind's training will take, from the time of two steps of a throwaway copy."""
    out, run = {}, config.run
    for spec in settings.inference:
        torch.manual_seed(run.seed)
        inference = _build(config, spec, build_pair, splits, learn_story)
        device = inference.story.device
        first = next(splits["train"].batches(run.batch_size, shuffle=True, seed=run.seed, device=device))
        if not _trains_something(inference):
            out[spec] = 0.0
            continue
        with pyro.validation_enabled(False):
            inference.step(first)
            start = time.perf_counter()
            inference.step(first)
        per_step = time.perf_counter() - start
        out[spec] = per_step * splits["train"].num_batches(run.batch_size) * run.epochs
    return out


def compare(
    config: TrainConfig, build_pair, splits, settings: CompareSettings, learn_story=True, progress=True
) -> dict:
    """Train a fresh ``build_pair()`` (story, guide) with each inference kind, from the same
    initial weights and seed and with the training of ``config`` (each kind built from the run's
    plan), and evaluate each on ``splits["test"]`` with the negative ELBO (10 samples of its
    reconstruction term) and the IW bound; an undirected story, which has neither, with its
    default estimator (:func:`~fabula.evaluation.default_estimator`: AIS for the RSM). With
    ``learn_story=False`` only λ is fitted (per-instance SVI then trains nothing)."""
    rows, run = {}, config.run
    guide = build_pair()[1]
    for spec in settings.inference:  # a kind the story's objective refuses is refused before any trains
        objective_of(config.story, config.model, replace(config.inference, inference=spec), guide)
    for spec in settings.inference:
        torch.manual_seed(run.seed)
        inference = _build(config, spec, build_pair, splits, learn_story)
        pyro.set_rng_seed(run.seed)
        start = time.perf_counter()
        history = [{"loss": float("nan")}]
        if _trains_something(inference):
            with pyro.validation_enabled(False):
                history = inference.fit(
                    splits["train"], run.epochs, run.batch_size, run.seed, progress=progress
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


COLLAPSED_KL = 0.1
"""Nats of KL per datum below which a row's q carries next to nothing of x: posterior collapse."""

UNFIT_SHARE = 0.05
"""How far above the generating model's NLL (a share of it) a row counts as not fitted."""


def flags(row: dict, reference: dict | None = None) -> list[str]:
    """What a reader must know before comparing ``row``'s figures: a collapsed q (KL under
    :data:`COLLAPSED_KL` nats per datum) and an NLL more than :data:`UNFIT_SHARE` above the
    generating model's (``reference``), each with its remedy."""
    out = []
    if row.get("kl") is not None and row["kl"] < COLLAPSED_KL:
        out.append(
            f"collapsed (KL {row['kl']:.2f} < {COLLAPSED_KL}): try --anneal linear:STEPS, --free-bits F or sa-vae:K"
        )
    if reference is not None and row["nll"] > reference["nll"] * (1 + UNFIT_SHARE):
        gap = row["nll"] - reference["nll"]
        out.append(
            f"not fitted (NLL {gap:.1f} above the generating model's): train longer (--epochs) or on more data"
        )
    return out


def markdown(rows: dict[str, dict], reference: dict | None = None) -> str:
    lines = [
        "| inference | -ELBO | NLL (estimator) | KL | PPL | train s | steps/s | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def figure(value, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for spec, r in rows.items():
        lines.append(
            f"| {spec} | {figure(r['nll_elbo'], 2)} | {r['nll']:.2f} ({r['estimator']}) | {figure(r['kl'], 2)} | "
            f"{figure(r['perplexity'], 1)} | {r['train_seconds']:.1f} | {r['steps_per_second']:.1f} | "
            f"{'; '.join(flags(r, reference))} |"
        )
    if reference is not None:
        estimator = f"{reference['estimator']}:{reference['samples']}"
        lines.append(
            f"| generating model | | {reference['nll']:.2f} ({estimator}) | {reference['kl']:.2f} | | | | |"
        )
    return "\n".join(lines)
