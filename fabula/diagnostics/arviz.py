"""Conversion of fabula posteriors to ArviZ ``InferenceData`` and PSIS k-hat of q."""

from __future__ import annotations

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


def plot_diagnostics(idata, out_dir, reference=None) -> list[str]:
    """Trace, rank, pair and (for MCMC) energy plots of ``idata`` as PNG files in ``out_dir``;
    with a ``reference`` (e.g. NUTS draws) also q-against-reference density overlays.
    Returns the written file names.

    The figures are drawn with pyplot in non-interactive mode and closed once written; fabula
    leaves matplotlib's backend to matplotlib (Agg where there is no display), since choosing
    one (``matplotlib.use``) is process-wide."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    coords = {"data": idata.posterior["data"].values[:1]}  # one datum keeps the panels readable
    names = [v for v, x in idata.posterior.data_vars.items() if x.dtype.kind == "f"]  # continuous sites
    binned = [v for v, x in idata.posterior.data_vars.items() if x.dtype.kind == "i" and x.max() <= 1]
    plots = {
        "trace.png": lambda: az.plot_trace(idata, var_names=names + binned, coords=coords, compact=True),
        "rank.png": lambda: az.plot_rank(idata, var_names=names + binned, coords=coords),
    }
    if names:
        plots["pair.png"] = lambda: az.plot_pair(idata, var_names=names, coords=coords)
    if "sample_stats" in idata.groups() and "energy" in idata.sample_stats:
        stats = idata.sample_stats
        if "data" in stats["energy"].dims:  # per-datum chains: the first datum's energy
            stats = stats.isel(data=0)
        plots["energy.png"] = lambda: az.plot_energy(stats)
    if reference is not None:
        plots["q_vs_reference.png"] = lambda: az.plot_density(
            [idata.posterior.sel(coords), reference.posterior.sel(coords)],
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
