"""Conversion of fabula posteriors to ArviZ ``InferenceData`` and PSIS k-hat of q."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
from pyro import poutine

from fabula.errors import UsageError
from fabula.evaluation.bounds import log_weights, pareto_khat
from fabula.inference.mcmc import MCMC
from fabula.models.constrained import ConstrainedSentences
from fabula.particles import replay, values_trace
from fabula.traces import sample_sites

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.x refactor on import; fabula pins the 0.2x API here.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az


@torch.no_grad()
def _log_likelihood(
    story, batch, samples: dict[str, torch.Tensor], chunk: int = 100
) -> dict[str, torch.Tensor]:
    r"""``{observed site: [chain, draw, B]}``: log p(x | z) of every draw (scale and mask applied),
    by replaying the story on the draws (``chunk`` draws per pass,
    :func:`~fabula.particles.replay`); where finite sites were summed out, one entry for all the
    observed sites together, :math:`\log p(x \mid z) = \log p(x, z) - \log p(z)`."""
    chains, draws = next(iter(samples.values())).shape[:2]
    out: dict[str, list] = {}
    for c in range(chains):
        parts: dict[str, list] = {}
        for start in range(0, draws, chunk):
            values = {s: v[c, start : start + chunk] for s, v in samples.items()}
            replayed = replay(story, batch, values_trace(values), next(iter(values.values())).shape[0])
            observed = [site for site in sample_sites(replayed.trace) if site["is_observed"]]
            if replayed.summed_out:
                name = "+".join(site["name"] for site in observed)
                parts.setdefault(name, []).append(replayed.joint - replayed.latent)
                continue
            for site in observed:
                parts.setdefault(site["name"], []).append(site["log_prob"].expand_as(replayed.joint))
        for name, p in parts.items():
            out.setdefault(name, []).append(torch.cat(p))
    return {name: torch.stack(v) for name, v in out.items()}


def _stored(draws: torch.Tensor):
    """Draws as ArviZ reads them: integers where every draw is one (binary units drawn as 0.0 /
    1.0), so that its plots bin them instead of smoothing a density over two values."""
    if draws.is_floating_point() and bool((draws == draws.round()).all()):
        return draws.long().cpu().numpy()
    return draws.cpu().numpy()


def _observed(story, batch) -> dict[str, torch.Tensor]:
    trace = poutine.trace(story.model).get_trace(batch)
    return {s["name"]: s["value"] for s in sample_sites(trace) if s["is_observed"]}


def _sentence_chains(chains, batch):
    """Chains over sentences (:class:`~fabula.inference.sequence_mh.SequenceMH`): their scalar
    statistics, ``log_pi`` and ``length`` as the posterior (r-hat and ESS apply to these), the
    moves and their acceptance as ``sample_stats``; dimension ``data``, one constraint set each."""
    scalar = {s: chains.samples[s].numpy() for s in ("log_pi", "length")}
    stats = {k: v.numpy() for k, v in chains.stats.items()}
    return az.from_dict(
        posterior=scalar,
        sample_stats=stats,
        coords={"data": batch.index.cpu().numpy()},
        dims={k: ["data"] for k in (*scalar, *stats)},
    )


def to_arviz(inference, batch, num_samples: int = 500):
    """``az.InferenceData`` of ``inference``'s posterior for ``batch``.

    * :class:`~fabula.inference.MCMC`: its last run on this batch (sampled if none), as
      ``(chain, draw)``, with ``sample_stats`` (``energy``, ``diverging``, ``step_size``,
      ``n_steps``, ``tree_depth``; per datum, dimension ``data``, for the NumPyro backend);
    * any variational inference object: ``num_samples`` draws from q, as one chain;
    * MCMC over constrained sentences: the chains' scalar statistics (:func:`_sentence_chains`).

    Groups ``posterior``, ``log_likelihood`` (log p(x | z) per draw and datum) and
    ``observed_data``; the ``"data"`` plate is the ``data`` dimension (coordinates: the data's
    indices), event dimensions are ``<site>_dim_<i>``. The posterior's ``attrs`` name the
    inference object (``inference``) and, for MCMC, the kernel and what its run reported
    (:attr:`~fabula.inference.kernels.Chains.info`, e.g. NUTS's ``twin``).
    """
    story = inference.story
    if isinstance(inference, MCMC) and isinstance(story, ConstrainedSentences):
        return _sentence_chains(inference.chains_for(batch), batch)
    with torch.no_grad():
        attrs = {"inference": type(inference).__name__}
        if isinstance(inference, MCMC):
            chains = inference.chains_for(batch)
            samples, stats = chains.samples, {k: v.numpy() for k, v in chains.stats.items()}
            attrs.update(kernel=type(inference.kernel).__name__, **chains.info)
        else:
            samples = {s: v[None] for s, v in inference.posterior(batch, num_samples).items()}
            stats = None
    if not samples:
        raise UsageError(
            f"{type(inference).__name__} draws no latent site of {type(story).__name__} (its latents are summed "
            "out or it has none): its posterior is exact, fabula.particles.enumerated_posterior(story, batch)"
        )
    loglik = _log_likelihood(story, batch, samples)
    observed = _observed(story, batch)
    dims = {s: ["data", *(f"{s}_dim_{i}" for i in range(v.dim() - 3))] for s, v in samples.items()}
    dims.update({s: ["data", *(f"{s}_dim_{i}" for i in range(v.dim() - 1))] for s, v in observed.items()})
    if stats is not None:  # per-datum chains (the NumPyro backend) have per-datum statistics
        dims.update({k: ["data"] for k, v in stats.items() if v.ndim == 3})
    return az.from_dict(
        posterior={s: _stored(v) for s, v in samples.items()},
        sample_stats=stats,
        log_likelihood={s: v.cpu().numpy() for s, v in loglik.items()},
        observed_data={s: v.cpu().numpy() for s, v in observed.items()},
        coords={"data": batch.index.cpu().numpy()},
        dims=dims,
        posterior_attrs=attrs,
    )


@torch.no_grad()
def psis_khat(inference, batch, num_samples: int = 500) -> torch.Tensor:
    r"""Pareto k-hat per datum of the importance weights :math:`p(x, z_s) / q(z_s \mid x)`,
    :math:`z_s \sim q`: below 0.5 q is a good proposal for :math:`p(z\mid x)`, above 0.7 the
    importance-weighted estimates are unreliable. Weights that are equal up to rounding
    (q is the posterior) have no tail to fit and are given :math:`-\infty`.

    References: Y. Yao, A. Vehtari, D. Simpson, A. Gelman. Yes, but Did It Work?: Evaluating
    Variational Inference. ICML 2018.
    """
    if inference.source is None:
        raise UsageError(
            f"psis_khat diagnoses a variational q and this {type(inference).__name__} has none (its "
            "source is None); for MCMC chains read r-hat and ESS of fabula.diagnostics.to_arviz(mcmc, batch), "
            "and the k-hat of a proposal fitted to the draws in evaluate(mcmc, data, 'iw-draws:S')"
        )
    return pareto_khat(
        log_weights(inference.story, inference.guide, batch, num_samples, inference.local_params(batch))
    )


PLOTTED = 8  #: latent coordinates one figure shows at most
#: How PSIS's Pareto k-hat reads, printed beside it.
KHAT_MEANING = "below 0.5 good, 0.5-0.7 ok, above 0.7 unreliable"


def _most_coordinates() -> int:
    """The most coordinates (at most :data:`PLOTTED`) whose trace (two panels each), rank, density and
    pair (a triangle) figures all fit ArviZ's ``plot.max_subplots``."""
    limit = az.rcParams["plot.max_subplots"]
    if limit is None:
        return PLOTTED
    fits = [n for n in range(1, PLOTTED + 1) if 2 * n <= limit and n * (n - 1) // 2 <= limit]
    return max(fits, default=1)


def _plottable(posterior) -> tuple[list[str], list[str]]:
    """The continuous sites and the binary ones (drawn as integers, binned)."""
    continuous = [v for v, x in posterior.data_vars.items() if x.dtype.kind == "f"]
    binned = [v for v, x in posterior.data_vars.items() if x.dtype.kind == "i" and x.max() <= 1]
    return continuous, binned


def plotted_coordinates(posterior, names=None) -> tuple[list[str], dict, str]:
    """What the plots of the sites ``names`` (default: every plottable one) show: ``(sites, coords,
    label)``, e.g. ``"z[0:8] of item 3"``.

    The first datum and at most :data:`PLOTTED` coordinates in all, shared among the sites, the first
    ones of each along its last event dimension: the same panels for q and its reference whatever their
    draws. Fewer where ArviZ's ``plot.max_subplots`` is lower, so that no figure is cut."""
    if names is None:
        names = [v for group in _plottable(posterior) for v in group]
    datum = posterior["data"].values[0]
    coords = {"data": posterior["data"].values[:1]}
    budget = _most_coordinates()
    sites, shown = list(names)[:budget], []
    for i, site in enumerate(sites):
        share = budget // len(sites) + (i < budget % len(sites))
        event = [d for d in posterior[site].dims if d not in ("chain", "draw", "data")]
        if not event:  # one value per datum
            shown.append(site)
            continue
        *lead, last = event
        n = min(share, posterior.sizes[last])
        coords.update({d: posterior[d].values[:1] for d in lead})
        coords[last] = posterior[last].values[:n]
        shown.append(f"{site}[{', '.join(['0'] * len(lead) + [f'0:{n}'])}]")
    return sites, coords, f"{', '.join(shown)} of item {datum}"


def _select(dataset, coords):
    return dataset.sel({k: v for k, v in coords.items() if k in dataset.dims})


def plot_diagnostics(idata, out_dir, reference=None) -> list[str]:
    """Trace, rank, pair and (for MCMC) energy plots of ``idata`` as PNG files in ``out_dir``;
    with a ``reference`` (e.g. NUTS draws) also q-against-reference density overlays.
    Every figure shows the coordinates of :func:`plotted_coordinates`. Returns the written file names.

    The figures are drawn with pyplot in non-interactive mode and closed once written; fabula
    leaves matplotlib's backend to matplotlib (Agg where there is no display), since choosing
    one (``matplotlib.use``) is process-wide."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    posterior = idata.posterior
    continuous, binned = _plottable(posterior)
    sites, coords, _ = plotted_coordinates(posterior, continuous + binned)
    names = [v for v in sites if v in continuous]
    shown = _select(posterior, coords)
    plots = {
        "trace.png": lambda: az.plot_trace(idata, var_names=sites, coords=coords, compact=True),
        "rank.png": lambda: az.plot_rank(idata, var_names=sites, coords=coords),
    }
    if sum(shown[v].isel(chain=0, draw=0).size for v in names) >= 2:  # a pair plot needs two coordinates
        plots["pair.png"] = lambda: az.plot_pair(idata, var_names=names, coords=coords)
    if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
        stats = idata.sample_stats
        if "data" in stats["energy"].dims:  # per-datum chains: the plotted datum's energy
            stats = stats.isel(data=0)
        plots["energy.png"] = lambda: az.plot_energy(stats)
    if reference is not None and names:
        plots["q_vs_reference.png"] = lambda: az.plot_density(
            [shown, _select(reference.posterior, coords)],
            data_labels=["q", "reference"],
            var_names=names,
            shade=0.1,
        )
    written = []
    for name, draw in plots.items():
        with warnings.catch_warnings(), plt.ioff():
            # ArviZ 0.2x plotting calls matplotlib APIs that matplotlib 3.11 deprecates
            warnings.filterwarnings("ignore", category=matplotlib.MatplotlibDeprecationWarning)
            draw()
        plt.gcf().savefig(out / name, dpi=80)
        plt.close("all")
        written.append(name)
    return written


class _OneChain(logging.Filter):
    def filter(self, record) -> bool:
        return not record.getMessage().startswith("Shape validation failed")


def compact_summary(idata, var_names, path) -> list[str]:
    """Lines for the terminal from ``az.summary`` of ``var_names``: the worst r-hat and the lowest bulk
    and tail ESS, each with its coordinate (``z[item, k]``) and how many pass the usual bar (r-hat at
    most 1.01, ESS at least 100 per chain; Vehtari et al. 2021). The full table goes to ``path`` (CSV)."""
    chains, draws = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    one_chain = _OneChain()
    if chains == 1:  # draws from q: r-hat has no second chain, which ArviZ logs for every site
        logging.getLogger("arviz").addFilter(one_chain)
    try:
        table = az.summary(idata, var_names=list(var_names) or None)
    finally:
        logging.getLogger("arviz").removeFilter(one_chain)
    table.to_csv(path)
    lines = [
        f"summary of {', '.join(var_names)}: {len(table)} coordinates, {chains} chain(s) x {draws} draws "
        f"(full table: {path})"
    ]
    rhat = table["r_hat"].dropna()
    if chains == 1:
        lines.append("  r_hat    needs two chains or more (these draws are one chain)")
    elif len(rhat):
        lines.append(
            f"  r_hat    worst {rhat.max():.3f} at {rhat.idxmax()}; {int((rhat > 1.01).sum())} of "
            f"{len(rhat)} above 1.01 (the chains disagree: not mixed)"
        )
    else:
        lines.append("  r_hat    undefined (every chain holds one value)")
    bar = 100 * chains
    for ess in ("ess_bulk", "ess_tail"):
        column = table[ess].dropna()
        if len(column):
            lines.append(
                f"  {ess} lowest {column.min():.0f} at {column.idxmin()}; {int((column < bar).sum())} of "
                f"{len(column)} below {bar} (too few for reliable {'means' if ess == 'ess_bulk' else 'quantiles'})"
            )
    return lines


def khat_summary(khat: torch.Tensor) -> str:
    """One line of PSIS k-hat per datum (:func:`psis_khat`) with what its values mean."""
    values = " ".join(f"{k:.2f}" for k in khat.tolist())
    return f"PSIS k-hat of q per datum: {values} ({int((khat > 0.7).sum())} above 0.7; {KHAT_MEANING})"
