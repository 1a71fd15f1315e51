"""Fit one story with several inference kinds on the same data, from the same initial weights,
over one or more seeds, and compare them on one table (Kim et al. 2018, Table 1): NLL bound, KL,
perplexity, wall time, steps/s, each kind's NLL difference to the first kind with its standard
error over seeds, and the flags a reader must see first (a collapsed q, a fit far from the
generating model's NLL). Each kind is built from the same run configuration's plan as ``fabula
train`` builds it. An undirected story (the RSM) has no bound or KL: its rows give the NLL by its
own estimator (AIS)."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from dataclasses import dataclass, replace

import pyro
import torch

from fabula.errors import SettingsError
from fabula.evaluation import ImportanceWeighted, default_estimator, evaluate
from fabula.evaluation.estimators import spec_of
from fabula.inference import RefinementWarning, VariationalInference
from fabula.inference.annealing import unfinished_warmup
from fabula.inference.kinds import build, trainable
from fabula.models.capabilities import Undirected
from fabula.run.config import TrainConfig, objective_of
from fabula.run.plan import inference_setup
from fabula.settings import COUNT, check_ranges, setting


@dataclass
class CompareSettings:
    """Comparison: the inference kinds, the data they share, the seeds and the evaluation (their
    training is the run's configuration: epochs, batch size, optimizer, annealing, first seed)"""

    inference: tuple[str, ...] = setting(
        ("vae", "svi:20", "vae+svi:20", "sa-vae:20"), "inference kinds (specs of the registry) to compare"
    )
    train_size: int | None = setting(500, "training data used (the first N; unset: all)", within=COUNT)
    test_size: int | None = setting(200, "test data evaluated (the first N; unset: all)", within=COUNT)
    samples: int = setting(100, "IW samples for the NLL bound", within=COUNT)
    seeds: int = setting(
        3,
        "seeds per kind (--seed and the next ones): each row is their mean, with the standard "
        "error of its NLL difference to the first kind",
        within=COUNT,
    )
    fixed_story: bool = setting(
        False,
        "train the inference only, the story held at the data's generating model (the embedded "
        "synthetic corpora; Kim et al. 2018, Table 1 top)",
    )

    def __post_init__(self):
        check_ranges(self)
        if not self.inference:
            raise SettingsError("--inference needs at least one inference kind")
        if len(set(self.inference)) < len(self.inference):
            raise SettingsError(f"--inference names a kind twice: {' '.join(self.inference)}")
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
    config: TrainConfig, build_pair, splits, settings: CompareSettings, learn_story=True, done=()
) -> dict:
    """Seconds each kind's training will take over its seeds, from the time of two steps of a
    throwaway copy; the ``(kind, seed)`` cells in ``done`` take none."""
    out, run = {}, config.run
    for spec in settings.inference:
        left = sum((spec, seed) not in done for seed in seeds_of(config, settings))
        torch.manual_seed(run.seed)
        inference = _build(config, spec, build_pair, splits, learn_story)
        device = inference.story.device
        first = next(splits["train"].batches(run.batch_size, shuffle=True, seed=run.seed, device=device))
        if not left or not _trains_something(inference):
            out[spec] = 0.0
            continue
        with pyro.validation_enabled(False):
            inference.step(first)
            start = time.perf_counter()
            inference.step(first)
        per_step = time.perf_counter() - start
        out[spec] = per_step * splits["train"].num_batches(run.batch_size) * run.epochs * left
    return out


AVERAGED = ("nll_elbo", "nll", "kl", "perplexity", "train_seconds", "steps_per_second", "train_loss")
"""A cell's figures that a row gives as their mean over seeds (each a number, or ``None`` where
the story has no such figure); its ``refinement_rises`` are summed, and its
``unfinished_warmup`` is the same at every seed."""


def seeds_of(config: TrainConfig, settings: CompareSettings) -> list[int]:
    """The seeds of a comparison: the run's seed and the ``settings.seeds - 1`` after it."""
    return [config.run.seed + i for i in range(settings.seeds)]


def fit_and_evaluate(
    config: TrainConfig,
    spec: str,
    seed: int,
    build_pair,
    splits,
    settings: CompareSettings,
    learn_story=True,
    progress=True,
) -> dict:
    """One cell of a comparison: a fresh ``build_pair()`` (story, guide) trained with kind
    ``spec`` from seed ``seed`` with the training of ``config``, evaluated on ``splits["test"]``
    with the negative ELBO (10 samples of its reconstruction term) and the IW bound; an
    undirected story, which has neither, or one without latents, which needs neither, with its
    default estimator (:func:`~fabula.evaluation.default_estimator`: AIS for the RSM, exact for
    the RNNLM); ``refinement_rises`` counts
    the test batches whose refinement raised the negative ELBO
    (:class:`~fabula.inference.RefinementWarning`) and ``unfinished_warmup`` is β at the last step
    of a KL warm-up that training ended before. With ``learn_story=False`` only λ is fitted
    (per-instance SVI then trains nothing)."""
    run = replace(config.run, seed=seed)
    config = replace(config, run=run)
    torch.manual_seed(seed)
    inference = _build(config, spec, build_pair, splits, learn_story)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    history = [{"loss": float("nan")}]
    if _trains_something(inference):
        with pyro.validation_enabled(False):
            history = inference.fit(splits["train"], run.epochs, run.batch_size, seed, progress=progress)
    seconds = time.perf_counter() - start
    with warnings.catch_warnings(record=True) as caught:  # counted for the row's flags
        warnings.simplefilter("always", RefinementWarning)
        if isinstance(inference.story, Undirected) or not inference.story.latent_sites:
            estimator, elbo = default_estimator(inference.story), None
        else:
            estimator = ImportanceWeighted(settings.samples)
            elbo = evaluate(inference, splits["test"], "elbo:10").summary()["nll"]
        report = evaluate(inference, splits["test"], estimator).summary()
    rises = [w for w in caught if issubclass(w.category, RefinementWarning)]
    for w in caught:
        if w not in rises:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return {
        "nll_elbo": elbo,
        "nll": report["nll"],
        "kl": report.get("kl") if inference.story.latent_sites else None,  # no q to collapse
        "perplexity": report.get("corpus_perplexity"),
        "train_seconds": seconds,
        "steps_per_second": inference.num_steps / seconds if inference.num_steps else 0.0,
        "train_loss": history[-1]["loss"],
        "estimator": spec_of(estimator),
        "refinement_rises": len(rises),
        "unfinished_warmup": unfinished_warmup(inference.annealing, inference.num_steps)
        if isinstance(inference, VariationalInference) and inference.num_steps
        else None,
    }


def compare(
    config: TrainConfig,
    build_pair,
    splits,
    settings: CompareSettings,
    learn_story=True,
    progress=True,
    cells: dict | None = None,
    finished=None,
) -> dict:
    """Each kind of ``settings`` trained and evaluated once per seed (:func:`fit_and_evaluate`),
    from the same initial weights at each seed, and its row: the mean of each figure over the
    seeds (:func:`summarise`). ``cells`` maps ``(kind, seed)`` to the rows already computed (a
    resumed comparison), which are not computed again; ``finished(kind, seed, row)`` is called
    after each new cell (to store it)."""
    cells = dict(cells or {})
    guide = build_pair()[1]
    for spec in settings.inference:  # a kind the story's objective refuses is refused before any trains
        objective_of(config.story, config.model, replace(config.inference, inference=spec), guide)
    for spec in settings.inference:
        for seed in seeds_of(config, settings):
            if (spec, seed) in cells:
                continue
            row = fit_and_evaluate(config, spec, seed, build_pair, splits, settings, learn_story, progress)
            cells[spec, seed] = row
            if finished is not None:
                finished(spec, seed, row)
    return summarise(cells, settings.inference, seeds_of(config, settings))


DIFFERENCED = {"nll_elbo": "-ELBO", "nll": "NLL"}
"""The figures each row gives as a paired difference to the first kind's, and their names."""


def _paired(cells: dict, spec: str, first: str, seeds, key: str) -> dict | None:
    r"""The mean over ``seeds`` of ``spec``'s figure ``key`` minus ``first``'s at the same seed,
    :math:`\bar d`, and its standard error :math:`s_d / \sqrt n` (``None`` with one seed); ``None``
    where the story has no such figure."""
    if cells[first, seeds[0]][key] is None:
        return None
    d = [cells[spec, seed][key] - cells[first, seed][key] for seed in seeds]
    return {
        "mean": statistics.fmean(d),
        "se": statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None,
    }


def summarise(cells: dict, kinds, seeds) -> dict:
    """One row per kind from its cells ``cells[kind, seed]``: each figure's mean over the seeds,
    ``nll_per_seed``, and ``difference[key]`` for each of :data:`DIFFERENCED`, the paired
    difference to the first kind (:func:`_paired`): pairing by seed cancels what the seeds
    share (the initial weights, the data's order)."""
    first = kinds[0]
    rows = {}
    for spec in kinds:
        runs = [cells[spec, seed] for seed in seeds]
        row = {
            key: None if runs[0][key] is None else statistics.fmean(r[key] for r in runs) for key in AVERAGED
        }
        row.update(
            refinement_rises=sum(r["refinement_rises"] for r in runs),
            unfinished_warmup=runs[0]["unfinished_warmup"],
            estimator=runs[0]["estimator"],
            seeds=len(seeds),
            nll_per_seed=[r["nll"] for r in runs],
            difference={key: _paired(cells, spec, first, seeds, key) for key in DIFFERENCED},
        )
        rows[spec] = row
    return rows


COLLAPSED_KL = 0.1
"""Nats of KL per datum below which a row's q carries next to nothing of x: posterior collapse."""

UNFIT_SHARE = 0.05
"""How far above the generating model's NLL (a share of it) a row counts as not fitted."""


def flags(row: dict, reference: dict | None = None) -> list[str]:
    """What a reader must know before comparing ``row``'s figures: a collapsed q (KL under
    :data:`COLLAPSED_KL` nats per datum), a KL warm-up that the training ended before
    (:func:`~fabula.inference.annealing.unfinished_warmup`), a refinement that raised the negative ELBO on test
    batches (a step size too large), and an NLL more than :data:`UNFIT_SHARE` above the
    generating model's (``reference``), each with its remedy."""
    out = []
    if row.get("kl") is not None and row["kl"] < COLLAPSED_KL:
        out.append(
            f"collapsed (KL {row['kl']:.2f} < {COLLAPSED_KL}): try --anneal linear:STEPS, --free-bits F or sa-vae:K"
        )
    if row.get("unfinished_warmup") is not None:
        out.append(
            f"KL annealing unfinished (β = {row['unfinished_warmup']:.2f} at the last step): the "
            "model never fitted the ELBO; anneal over fewer steps than the training's"
        )
    if row.get("refinement_rises"):
        out.append(
            f"refinement raised the ELBO on {row['refinement_rises']} test batches: lower --refinement-lr "
            "or the kind's lr option (svi:lr=0.05)"
        )
    if reference is not None and row["nll"] > reference["nll"] * (1 + UNFIT_SHARE):
        gap = row["nll"] - reference["nll"]
        out.append(
            f"not fitted (NLL {gap:.1f} above the generating model's): train longer (--epochs) or on more data"
        )
    return out


SEPARATED_SE = 2.0
"""How many standard errors a kind's mean NLL difference to the first kind must exceed to count
as separated from it (about a 95% interval under normal errors)."""


def _difference(row: dict, key: str) -> str:
    paired = row["difference"][key]
    if paired is None:
        return ""
    if paired["se"] is None:
        return f"{paired['mean']:+.2f}"
    return f"{paired['mean']:+.2f} ± {paired['se']:.2f}"


def ordering(rows: dict[str, dict], key: str = "nll") -> str:
    """The kinds by the mean of figure ``key`` (one of :data:`DIFFERENCED`), and which differ
    from the first kind by more than :data:`SEPARATED_SE` standard errors of their paired
    difference."""
    first, name = next(iter(rows)), DIFFERENCED[key]
    ordered = " < ".join(sorted(rows, key=lambda spec: rows[spec][key]))
    others = [spec for spec in rows if spec != first]
    if not others:
        return f"{name}: {ordered}"
    if rows[first]["seeds"] < 2:
        return f"by mean {name}: {ordered} (one seed: no standard errors; --seeds 3 gives them)"
    paired = {s: rows[s]["difference"][key] for s in others}
    apart = [s for s in others if abs(paired[s]["mean"]) > SEPARATED_SE * paired[s]["se"]]
    within = [s for s in others if s not in apart]
    parts = [f"by mean {name} over {rows[first]['seeds']} seeds: {ordered}"]
    if apart:
        parts.append(f"apart from {first} by over {SEPARATED_SE:g} SE: {', '.join(apart)}")
    if within:
        parts.append(f"within {SEPARATED_SE:g} SE of {first}: {', '.join(within)}")
    return "; ".join(parts)


def markdown(rows: dict[str, dict], reference: dict | None = None) -> str:
    """The comparison's table (figures are means over seeds, differences paired by seed), the
    generating model's row where there is one, and the :func:`ordering` by each figure beneath."""
    first = next(iter(rows))
    lines = [
        f"| inference | -ELBO | -ELBO − {first}'s | NLL (estimator) | NLL − {first}'s | KL | PPL | train s "
        "| steps/s | flags |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def figure(value, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for spec, r in rows.items():
        lines.append(
            f"| {spec} | {figure(r['nll_elbo'], 2)} | {'' if spec == first else _difference(r, 'nll_elbo')} | "
            f"{r['nll']:.2f} ({r['estimator']}) | {'' if spec == first else _difference(r, 'nll')} | "
            f"{figure(r['kl'], 2)} | {figure(r['perplexity'], 1)} | {r['train_seconds']:.1f} | "
            f"{r['steps_per_second']:.1f} | {'; '.join(flags(r, reference))} |"
        )
    if reference is not None:
        estimator = f"{reference['estimator']}:{reference['samples']}"
        lines.append(
            f"| generating model | | | {reference['nll']:.2f} ({estimator}) | | {reference['kl']:.2f} | | | | |"
        )
    orderings = [ordering(rows, key) for key in DIFFERENCED if rows[first][key] is not None]
    return "\n".join([*lines, "", *orderings])
