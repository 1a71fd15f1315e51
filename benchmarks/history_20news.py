"""The line from RBMs to VAEs on the 20 Newsgroups split of Miao et al. (2016), in one table
beside the paper's rows (Table 1a): the replicated-softmax RBM trained by contrastive
divergence, docNADE, the sigmoid belief net trained by wake-sleep, reweighted wake-sleep and
NVIL, fDARN, NVDM of several sizes and the GSM, all scored on the test split by the same
evaluation, every row the median of ``--seeds``.

Every model trains with ``fabula.run.train`` (the code behind ``fabula train``) into its own
run directory under ``--out``, named by story, size, kind and seed (``rsm50-cd-1-seed0``,
``sbn50-nvil-seed1``, ``nvdm200-seed2``, ...); a shorter run already there is continued to the
epochs asked (``--resume``), a finished one is only scored. Each seed's scored row is kept in
its run directory's ``history_row.json`` with the settings that made it (training, evaluation,
seed), so invocations computing parts of the table (``--rows``, ``--seeds``, ``--sbn-inference``)
in parallel on the same ``--out`` join into one table by a last invocation that finds every
row kept. Perplexity is per document, exp(mean_d NLL_d / N_d), the papers' convention, NLL that
of the token sequence.

* RSM (``--units``; ``cd:1``, the Gibbs steps rising to 5 as Salakhutdinov & Hinton's did, and
  persistent CD, ``pcd:1``, on the same schedule; Adam, its step size decaying by 0.97 an epoch
  over the second half of training): AIS along the document length (``ais:RUNS:STEPS``, one
  annealing for every length, the narrow modes of long documents summed exactly). AIS's log Z_D
  is biased low, so the perplexity is biased optimistic; the band moves every log Z_D by two
  standard errors.
* docNADE (``--docnade-hidden`` units; Adam 1e-3, batches of 64): its exact likelihood, each
  test document read in ``--docnade-orders`` word orders fixed by its index (the story's
  ``orders``, set on the trained story before scoring: training reads one random order).
* SBN (``--units``; wake-sleep, ``rws:5``, ``nvil``) and fDARN (``--units``, autoregressive
  prior and q; ``nvil``): the ELBO (reconstruction over ``--elbo-samples`` draws) and the
  importance-weighted bound (``--iw-samples``). Posterior quality of each inference object's q
  on a random subset of test documents: PSIS k-hat of q as a proposal for p(h | x), and the mean
  absolute error of q's unit means E_q[h_j] against a Gibbs reference
  (``fabula.inference.DiscreteGibbs``, several chains, its worst r-hat reported). The SBN's
  factorised q has them in closed form; fDARN's autoregressive q has none, so its E_q[h_j] is
  the mean over ``--mean-samples`` draws h ~ q of unit j's conditional probability
  sigma(eta_j(h_<j)) (unbiased, and of lower variance than the mean of the draws' h_j).
* NVDM (one row per ``--nvdm-units``) and GSM (``--units`` topics and Gaussian units): ELBO and
  IW.
* Every row: NPMI of each topic's top 10 words (document co-occurrence in the test split),
  averaged over topics, and topic diversity (the unique share of the topics' top 25 words), of
  the story's topics (``topic_words``: the RSM's, SBN's, fDARN's and docNADE's hidden units, NVDM's
  latent dimensions, the GSM's topics).

Recorded results: ``rows[name]["seeds"][seed]`` holds each seed's row (its estimates' summaries,
band, posterior columns, NPMI, diversity, epochs, train and evaluation seconds) and
``rows[name]["summary"]`` the same figures over the seeds, each number as ``{"median", "low",
"high"}``; the table prints the medians, and the perplexities' and topic figures' ranges.

The paper's estimators: the RSM's 953 (Salakhutdinov & Hinton 2009) is AIS along the inverse
temperature; the SBN's 909 and fDARN's 917 (Mnih & Gregor 2014) and NVDM's 836 (50 units) and
852 (200 units, Miao et al. 2016) are variational lower bounds; docNADE's 896 is its exact
likelihood (autoregressive). The GSM (Miao et al. 2017) is not in Table 1a.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from fabula.data import load_dataset
from fabula.diagnostics import az, psis_khat, to_arviz
from fabula.distributions import AutoregressiveBernoulli
from fabula.evaluation import AIS, ELBO, Exact, ImportanceWeighted, evaluate, npmi, topic_diversity
from fabula.evaluation.metrics import perplexities
from fabula.guides import AutoregressiveBernoulliGuide
from fabula.inference import MCMC, DiscreteGibbs
from fabula.models.capabilities import HasTopics
from fabula.run import TrainConfig, load_run, train
from fabula.rundir import RunDirectory
from results_log import record, session

PAPER = [  # Miao et al. (2016), Table 1a, 20 Newsgroups: (model and size, estimator, perplexity)
    ("LDA 50 (Blei et al. 2003)", "as reported by Salakhutdinov & Hinton 2009", 1091),
    ("RSM 50 (Salakhutdinov & Hinton 2009)", "AIS, inverse temperature", 953),
    ("docNADE 50 (Larochelle & Lauly 2012)", "exact", 896),
    ("SBN 50 (Mnih & Gregor 2014)", "ELBO", 909),
    ("fDARN 50 (Mnih & Gregor 2014)", "ELBO", 917),
    ("NVDM 50 (Miao et al. 2016)", "ELBO", 836),
    ("NVDM 200 (Miao et al. 2016)", "ELBO", 852),
]
ROWS = ("rsm", "docnade", "sbn", "fdarn", "nvdm", "gsm")  # the row groups, in the table's order
RSM_KINDS = ("cd:1", "pcd:1")
SBN_KINDS = ("wake-sleep", "rws:5", "nvil")
FDARN_KINDS = ("nvil",)
NPMI_TOP, DIVERSITY_TOP = 10, 25  # the topic words that NPMI and diversity read


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data", help="folder holding 20news/")
    p.add_argument(
        "--out", help="folder of the run directories, continued when present (default: a temporary one)"
    )
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS, help="the row groups computed")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2],
        help="every row is trained and scored once per seed",
    )
    p.add_argument("--units", type=int, default=50, help="latent units of the RSM, SBN, fDARN and GSM rows")
    add_row_flags(p, "rsm", "RSM", RSM_KINDS, 100)
    p.add_argument("--docnade-epochs", type=int, default=50)
    p.add_argument("--docnade-hidden", type=int, default=50, help="hidden units of docNADE")
    p.add_argument(
        "--docnade-orders", type=int, default=1, help="word orders averaged per test document by docNADE"
    )
    add_row_flags(p, "sbn", "SBN", SBN_KINDS, 150)
    add_row_flags(p, "fdarn", "fDARN", FDARN_KINDS, 150)
    p.add_argument("--nvdm-epochs", type=int, default=120)
    p.add_argument("--nvdm-units", type=int, nargs="+", default=[50, 200], help="one NVDM row per size")
    p.add_argument("--gsm-epochs", type=int, default=120)
    p.add_argument("--ais-runs", type=int, default=100, help="AIS runs (all lengths share them)")
    p.add_argument("--ais-steps", type=int, default=100, help="AIS Gibbs sweeps per e-fold of length")
    p.add_argument(
        "--elbo-samples", type=int, default=20, help="draws of the reconstruction term of the ELBO"
    )
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument(
        "--posterior-documents", type=int, default=50, help="test documents of the posterior columns"
    )
    p.add_argument("--khat-samples", type=int, default=500, help="draws of q per document for PSIS k-hat")
    p.add_argument(
        "--mean-samples", type=int, default=2000, help="draws of fDARN's q per document for E_q[h]"
    )
    p.add_argument("--gibbs-chains", type=int, default=4)
    p.add_argument("--gibbs-warmup", type=int, default=100, help="Gibbs sweeps discarded per chain")
    p.add_argument("--gibbs-draws", type=int, default=500, help="Gibbs sweeps kept per chain")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true", help="print only; do not write results")
    tiny = dict(
        seeds=[0, 1],
        units=4,
        rsm_epochs=[1],
        docnade_epochs=1,
        docnade_hidden=4,
        docnade_orders=2,
        sbn_epochs=[1],
        fdarn_epochs=[1],
        nvdm_epochs=1,
        nvdm_units=[4, 6],
        gsm_epochs=1,
        ais_runs=2,
        ais_steps=2,
        elbo_samples=2,
        iw_samples=5,
        posterior_documents=3,
        khat_samples=5,
        mean_samples=5,
        gibbs_warmup=2,
        gibbs_draws=5,
    )
    with session(p, argv, **tiny) as args:
        return benchmark(args)


# --- one seed's row -------------------------------------------------------------------------


def seed_row(args, story: str, out: Path, seed: int, settings: dict, evaluation: tuple, score) -> dict:
    """One seed's row of ``story``: trained into ``out`` with ``settings`` (:func:`trained`),
    scored by ``score(run, seed)`` with the topics' NPMI and diversity added; or the row that an
    earlier call with the same story, seed, ``settings`` and evaluation settings (``evaluation``,
    names in ``args``) kept in ``out/history_row.json``, whose run is then not even loaded."""
    key = {"story": story, "seed": seed, **settings, **{name: getattr(args, name) for name in evaluation}}
    key = json.loads(json.dumps(key))  # as kept: tuples read back as lists
    path = out / "history_row.json"
    if path.is_file() and (kept := json.loads(path.read_text()))["key"] == key:
        return kept["row"]
    run, seconds = trained(args, story, out, seed, settings)
    torch.manual_seed(seed)
    start = time.perf_counter()
    row = {"epochs": settings["epochs"], "train_seconds": seconds, **score(run, seed), **topic_quality(run)}
    row["eval_seconds"] = round(time.perf_counter() - start, 1)
    path.write_text(json.dumps({"key": key, "row": row}, indent=1) + "\n")
    return row


def trained(args, story: str, out: Path, seed: int, settings: dict) -> tuple:
    """``(run, train seconds)``: ``story`` trained into ``out`` (a shorter run there continued, a
    finished one only loaded), the seconds summed over its epochs (per-epoch evaluation excluded)."""
    config = TrainConfig.create(story, data="20news", data_dir=args.data_dir, seed=seed, **settings)
    directory = RunDirectory(out)
    done = len(directory.history())
    if done > config.run.epochs:
        raise SystemExit(f"{out} holds a run of {done} epochs, more than the {config.run.epochs} asked")
    if done < config.run.epochs:
        train(config, out, resume=directory.checkpoint_path.is_file(), progress=False)
    seconds = sum(m["train_seconds"] for m in RunDirectory(out).history())
    return load_run(out, data_dir=args.data_dir), round(seconds, 1)


def topic_quality(run) -> dict:
    """NPMI (top 10 words, document co-occurrence in the test split, averaged over topics) and
    diversity (top 25) of the story's topics; nothing for a story without topics."""
    story = run.inference.story
    if not isinstance(story, HasTopics):
        return {}
    return {
        "npmi": float(npmi(story.topic_words(NPMI_TOP), run.splits["test"]).mean()),
        "diversity": topic_diversity(story.topic_words(DIVERSITY_TOP)),
    }


BOUNDS = ("elbo_samples", "iw_samples")
POSTERIOR = (
    "posterior_documents",
    "khat_samples",
    "mean_samples",
    "gibbs_chains",
    "gibbs_warmup",
    "gibbs_draws",
)


def bounds(args, run) -> dict:
    """The ELBO and IW summaries of a run's inference object on the test split."""
    test = run.splits["test"]
    return {
        f"ELBO (S={args.elbo_samples})": evaluate(run.inference, test, ELBO(args.elbo_samples)).summary(),
        f"IW (S={args.iw_samples})": evaluate(
            run.inference, test, ImportanceWeighted(args.iw_samples), batch_size=100
        ).summary(),
    }


def unit_means(args, guide, params: dict) -> torch.Tensor:
    """E_q[h], ``[B, F]``: a factorised q's closed form; for an autoregressive q (fDARN's) the
    mean over ``--mean-samples`` draws h ~ q of each unit's conditional probability."""
    if not isinstance(guide, AutoregressiveBernoulliGuide):
        return guide.posterior_mean(params)
    q = AutoregressiveBernoulli(params["logits"], guide.weight)
    h = q.sample((args.mean_samples,))
    return torch.sigmoid(q.logits + h @ q.coupling.T).double().mean(0)


def posterior_quality(args, run, seed: int) -> dict:
    """PSIS k-hat of q and the error of q's unit means against the Gibbs reference, on a
    seeded random subset of test documents."""
    test = run.splits["test"]
    picked = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    batch = test.batch(picked[: args.posterior_documents].sort().values)
    inference = run.inference
    khat = psis_khat(inference, batch, args.khat_samples)
    gibbs = MCMC(
        inference.story,
        inference.guide,
        kernel=DiscreteGibbs(),
        num_samples=args.gibbs_draws,
        warmup=args.gibbs_warmup,
        num_chains=args.gibbs_chains,
        progress=False,
        seed=seed,
    )
    idata = to_arviz(gibbs, batch)
    with warnings.catch_warnings():  # a unit constant in every chain has no r-hat (nan)
        warnings.simplefilter("ignore", RuntimeWarning)
        rhat = torch.as_tensor(az.rhat(idata, var_names=["h"])["h"].values)
    reference = torch.as_tensor(idata.posterior["h"].values).double().mean((0, 1))  # [B, F]
    with torch.no_grad():
        q = unit_means(args, inference.guide, inference.local_params(batch))
    return {
        "documents": len(batch.index),
        "khat_median": float(khat.median()),
        "khat_above_0.7": float((khat > 0.7).double().mean()),
        "mean_abs_error": float((q - reference).abs().mean()),
        "gibbs_rhat_max": float(rhat.nan_to_num(1.0).max()),
        "gibbs_seconds": round(gibbs.seconds["sample"], 1),
    }


# --- the rows, one function per kind ----------------------------------------------------------


@functools.cache
def train_documents(data_dir: str) -> int:
    return len(load_dataset("20news", data_dir)["train"])


def rsm_row(args, folder: Path, spec: str, epochs: int, seed: int) -> dict:
    """The RSM trained by contrastive divergence ``spec``, scored by AIS with its 2-SE band."""
    per_epoch = math.ceil(train_documents(args.data_dir) / 100)
    settings = dict(
        epochs=epochs,
        lr=1e-3,
        batch_size=100,
        hidden=args.units,
        inference=spec,
        max_gibbs_steps=5,
        steps_every=max(1, math.ceil(epochs * per_epoch / 5)),
        # the step size decays over the second half; at a constant one the test perplexity is far
        # worse (100 epochs: cd:1 1019.5, pcd:1 971.3) and rises with training (pcd:1, 300: 1095.7)
        lr_decay=0.97,
        decay_after=epochs // 2,
    )

    def score(run, seed: int) -> dict:
        test = run.splits["test"]
        estimator = AIS(args.ais_runs, args.ais_steps, seed=seed)
        report = evaluate(run.inference, test, estimator, batch_size=len(test))
        se = report.diagnostics["ais_se"]
        return {
            "estimates": {f"AIS ({args.ais_runs} runs, {args.ais_steps} steps)": report.summary()},
            "band": {
                "low": perplexities(report.nll - 2 * se, report.tokens)["perplexity"],
                "high": perplexities(report.nll + 2 * se, report.tokens)["perplexity"],
            },
            "lengths": int(report.tokens.long().unique().numel()),
        }

    out = folder / f"rsm{args.units}-{spec.replace(':', '-')}-seed{seed}"
    return seed_row(args, "rsm", out, seed, settings, ("ais_runs", "ais_steps"), score)


def docnade_estimator(args) -> str:
    return f"exact ({args.docnade_orders} order{'s' if args.docnade_orders != 1 else ''})"


def docnade_row(args, folder: Path, seed: int) -> dict:
    """docNADE trained by maximum likelihood, scored exactly in ``--docnade-orders`` orders."""
    settings = dict(epochs=args.docnade_epochs, lr=1e-3, batch_size=64, hidden=args.docnade_hidden)

    def score(run, seed: int) -> dict:
        run.inference.story.orders = args.docnade_orders
        report = evaluate(run.inference, run.splits["test"], Exact())
        return {"estimates": {docnade_estimator(args): report.summary()}}

    out = folder / f"docnade{args.docnade_hidden}-seed{seed}"
    return seed_row(args, "docnade", out, seed, settings, ("docnade_orders",), score)


def belief_net_row(args, folder: Path, story: str, spec: str, epochs: int, seed: int) -> dict:
    """The SBN or fDARN (``story``) trained by ``spec``: ELBO, IW and the posterior columns."""
    settings = dict(inference=spec, epochs=epochs, lr=3e-3, batch_size=64, latent_dim=args.units, hidden=())

    def score(run, seed: int) -> dict:
        return {"estimates": bounds(args, run), "posterior": posterior_quality(args, run, seed)}

    out = folder / f"{story}{args.units}-{spec.replace(':', '-')}-seed{seed}"
    return seed_row(args, story, out, seed, settings, BOUNDS + POSTERIOR, score)


def nvdm_row(args, folder: Path, units: int, seed: int) -> dict:
    """NVDM of ``units`` latent units: ELBO and IW."""
    settings = dict(epochs=args.nvdm_epochs, lr=5e-4, batch_size=64, latent_dim=units)
    out = folder / f"nvdm{units}-seed{seed}"
    return seed_row(
        args, "nvdm", out, seed, settings, BOUNDS, lambda run, seed: {"estimates": bounds(args, run)}
    )


def gsm_row(args, folder: Path, seed: int) -> dict:
    """The GSM of ``--units`` topics and Gaussian units: ELBO and IW."""
    settings = dict(
        epochs=args.gsm_epochs, lr=5e-4, batch_size=64, num_topics=args.units, latent_dim=args.units
    )
    out = folder / f"gsm{args.units}-seed{seed}"
    return seed_row(
        args, "gsm", out, seed, settings, BOUNDS, lambda run, seed: {"estimates": bounds(args, run)}
    )


def add_row_flags(
    p: argparse.ArgumentParser, story: str, label: str, kinds: tuple[str, ...], epochs: int
) -> None:
    """``--{story}-inference`` (the kinds of the story's rows) and ``--{story}-epochs``."""
    p.add_argument(
        f"--{story}-inference", nargs="+", default=list(kinds), help=f"inference kinds of the {label} rows"
    )
    p.add_argument(
        f"--{story}-epochs",
        type=int,
        nargs="+",
        default=[epochs],
        help=f"epochs of every {label} row, or one per --{story}-inference (default: {epochs})",
    )


def per_kind(epochs: list[int], kinds: list[str], story: str) -> list[tuple[str, int]]:
    """``(kind, epochs)`` of each row of ``story``: one count for every kind, or one per kind."""
    counts = epochs * len(kinds) if len(epochs) == 1 else epochs
    if len(counts) != len(kinds):
        raise SystemExit(f"--{story}-epochs: give one count, or one per --{story}-inference")
    return list(zip(kinds, counts, strict=True))


def row_makers(args, folder: Path) -> dict:
    """Each asked row's name and its function of a seed, in the table's order."""
    units, makers = args.units, {}
    if "rsm" in args.rows:
        for spec, epochs in per_kind(args.rsm_epochs, args.rsm_inference, "rsm"):
            makers[f"fabula RSM {units} by {spec}, k->5"] = functools.partial(
                rsm_row, args, folder, spec, epochs
            )
    if "docnade" in args.rows:
        makers[f"fabula docNADE {args.docnade_hidden} by maximum likelihood"] = functools.partial(
            docnade_row, args, folder
        )
    for story, label in (("sbn", "SBN"), ("fdarn", "fDARN")):
        if story in args.rows:
            kinds = getattr(args, f"{story}_inference")
            for spec, epochs in per_kind(getattr(args, f"{story}_epochs"), kinds, story):
                makers[f"fabula {label} {units} by {spec}"] = functools.partial(
                    belief_net_row, args, folder, story, spec, epochs
                )
    if "nvdm" in args.rows:
        for size in args.nvdm_units:
            makers[f"fabula NVDM {size} by vae"] = functools.partial(nvdm_row, args, folder, size)
    if "gsm" in args.rows:
        makers[f"fabula GSM {units} by vae"] = functools.partial(gsm_row, args, folder)
    return makers


# --- over seeds, and the table ------------------------------------------------------------------


def median_range(values: list[float]) -> dict:
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def summarise(rows: list[dict]) -> dict:
    """Every figure of the seeds' ``rows`` (nested alike): a number as its median and range over
    them, anything else (an estimator's name) as the first seed's."""
    summary = {}
    for key, value in rows[0].items():
        values = [row[key] for row in rows if key in row]
        if len(values) < len(rows):
            continue
        if isinstance(value, dict):
            summary[key] = summarise(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            summary[key] = median_range(values)
        else:
            summary[key] = value
    return summary


def cell(m: dict, digits: int = 1) -> str:
    """A figure's median and range over seeds."""
    return f"{m['median']:.{digits}f} ({m['low']:.{digits}f} to {m['high']:.{digits}f})"


def table(rows: dict) -> str:
    lines = [
        "| model | trained by | estimator | test perplexity (per doc), median (range) | corpus perplexity "
        "| NPMI | diversity | train s | eval s | PSIS k-hat: median, share > 0.7 "
        "| mean abs error of E_q[h] against Gibbs (max r-hat) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {model}, paper | | {estimator} | {figure} | | | | | | | |" for model, estimator, figure in PAPER
    ]
    for name, row in rows.items():
        model, by = name.split(" by ")
        s = row["summary"]
        topics = [cell(s["npmi"], 3), cell(s["diversity"], 3)] if "npmi" in s else ["", ""]
        post = {k: v["median"] for k, v in s["posterior"].items()} if "posterior" in s else None
        quality = (
            [
                f"{post['khat_median']:.2f}, {post['khat_above_0.7']:.2f}",
                f"{post['mean_abs_error']:.3f} ({post['gibbs_rhat_max']:.2f})",
            ]
            if post
            else ["", ""]
        )
        for estimator, e in s["estimates"].items():
            figure = cell(e["perplexity"])
            if "band" in s:
                figure += f", 2-SE band {s['band']['low']['median']:.1f}-{s['band']['high']['median']:.1f}"
            cells = [
                model,
                f"{by}, {s['epochs']['median']:.0f} epochs",
                estimator,
                figure,
                f"{e['corpus_perplexity']['median']:.1f}",
                *topics,
                f"{s['train_seconds']['median']:.0f}",
                f"{s['eval_seconds']['median']:.0f}",
                *quality,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(args, rows: dict) -> str:
    """The paragraph under the table: settings, and each RSM row's AIS diagnostics."""
    seeds = ", ".join(map(str, args.seeds))
    text = (
        f"Test split; {args.units} latent units (RSM, SBN, fDARN, GSM topics and Gaussian units), docNADE "
        f"{args.docnade_hidden} hidden units, NVDM {', '.join(map(str, args.nvdm_units))}. Every row trained and "
        f"scored once per seed ({seeds}): the median over seeds, its range in brackets (train s, eval s, corpus "
        "perplexity and the posterior columns: medians; the 2-SE band: the medians of the seeds' band ends). "
        f"AIS along the document length, {args.ais_runs} runs, {args.ais_steps} Gibbs sweeps per e-fold of length "
        "(one annealing for every length; the local maxima of the hidden marginal reached from each word's state "
        "and their one-unit neighbours summed exactly): its log Z_D is biased low, so the RSM's perplexity is "
        "biased optimistic (a stochastic lower bound); the band moves every log Z_D by two of its standard "
        f"errors. docNADE: exact, each test document read in {args.docnade_orders} word order(s) fixed by its "
        f"index. Posterior columns: {args.posterior_documents} random test documents (per seed), "
        f"{args.khat_samples} draws of q for k-hat, Gibbs {args.gibbs_chains} chains x ({args.gibbs_warmup} + "
        f"{args.gibbs_draws}) sweeps; the SBN's E_q[h] in closed form, fDARN's (autoregressive q, no closed form) "
        f"the mean over {args.mean_samples} draws h ~ q of each unit's conditional probability. NPMI: the topics' "
        f"top {NPMI_TOP} words, document co-occurrence in the test split, mean over topics; diversity: the unique "
        f"share of their top {DIVERSITY_TOP} words (the RSM's, SBN's, fDARN's and docNADE's hidden units, NVDM's "
        "latent dimensions and the GSM's topics). Train s: the epochs' seconds (per-epoch evaluation excluded); "
        "eval s: every figure of the row. The papers' estimators: the RSM's 953 is AIS along the inverse "
        "temperature (Salakhutdinov & Hinton 2009); the SBN's and fDARN's (Mnih & Gregor 2014) and NVDM's (Miao "
        "et al. 2016) are variational lower bounds, so the ELBO rows are their comparison; docNADE's is exact."
    )
    for name, row in rows.items():
        s = row["summary"]
        if "band" in s:
            e = {
                k: v["median"] for k, v in next(iter(s["estimates"].values())).items() if isinstance(v, dict)
            }
            text += (
                f" {name} (medians over seeds): {s['lengths']['median']:.0f} distinct lengths; log Z_D standard "
                f"error mean {e['ais_se_mean']:.3f}, max {e['ais_se_max']:.3f} nats; effective runs mean "
                f"{e['ais_ess_mean']:.1f}; AIS below the mode bound D max_h g(h) by at most "
                f"{e['ais_mode_gap_max']:.3f} nats."
            )
    return text


def benchmark(args) -> dict:
    """The benchmark with parsed ``args``; returns what it records."""
    torch.set_num_threads(args.threads)
    folder = Path(args.out or tempfile.mkdtemp(prefix="history20-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, make in row_makers(args, folder).items():
        by_seed = {}
        for seed in args.seeds:
            by_seed[seed] = make(seed)
            figures = ", ".join(f"{k} {e['perplexity']:.1f}" for k, e in by_seed[seed]["estimates"].items())
            print(f"{name}, seed {seed}: {figures}", flush=True)
        rows[name] = {"seeds": by_seed, "summary": summarise(list(by_seed.values()))}
    text = table(rows) + "\n\n" + notes(args, rows)
    print(text)
    results = {"rows": rows, "paper": PAPER, "settings": vars(args)}
    if not args.no_record:
        record("history_20news", results, text)
    return results


if __name__ == "__main__":
    main()
