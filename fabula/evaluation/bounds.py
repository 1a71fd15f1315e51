r"""Per-datum bounds on :math:`\log p(x)`: the ELBO and the importance-weighted bound.

All estimators trace the story once with the samples on an outer ``"particles"`` plate
(left of the ``"data"`` plate), so ``S`` samples cost one vectorised pass, never a Python loop.
"""

from __future__ import annotations

import math
import warnings

import torch
from pyro.distributions import MultivariateStudentT

from fabula.errors import UsageError
from fabula.particles import Replay, replay, run_traces, values_trace
from fabula.traces import (
    constrained,
    elbo_parts,
    has_mean,
    log_density,
    prior_trace,
    sample_sites,
    unconstraining,
)


def log_weights(story, guide, batch, num_samples: int, params=None) -> torch.Tensor:
    r""":math:`\log w_s = \log p(x, z_s) - \log q(z_s \mid x)`, shape ``[S, B]``: every site's scale and
    mask applied as in Pyro's traces, auxiliary guide sites in :math:`q`, finite discrete sites
    without a guide site summed out of :math:`p` (:func:`~fabula.particles.replay`)."""
    replay, guide_trace = run_traces(story, guide, batch, num_samples, params)
    return replay.joint - log_density(guide_trace)


def elbo_terms(story, guide, batch, num_samples: int = 1, params=None, analytic_kl: bool = True):
    r"""Per-datum reconstruction :math:`E_q[\log p(x\mid z)]` and :math:`KL(q\|p)` of each latent site.

    Expectations are averaged over ``num_samples`` draws (see :func:`terms_from_traces`).

    :returns: ``(recon [B], {site: kl [B]})``.
    """
    return terms_from_traces(*run_traces(story, guide, batch, num_samples, params), analytic_kl)


def terms_from_traces(replay: Replay, guide_trace, analytic_kl: bool = True):
    r"""Reconstruction and per-site KL, per datum, from :func:`~fabula.particles.run_traces`,
    averaged over the draws.

    The terms are :func:`~fabula.traces.elbo_parts`' (the KL analytic where torch knows the pair,
    ``analytic_kl`` is asked and the order of the draws allows it, else
    :math:`\log q(z) - \log p(z)`; auxiliary guide sites; scales and masks). Where the story's
    finite discrete sites were summed out, the ELBO is :math:`E_q[\log p(x, z) - \log q(z)]` with
    :math:`p(x, z) = \sum_c p(x, z, c)`, split as the reconstruction :math:`\log p(x \mid z)
    = \log p(x, z) - \log p(z)` and one KL term :math:`\log q(z) - \log p(z)` of the guide's sites
    together (none without guide sites: the ELBO is then :math:`\log p(x)` itself).
    """
    shape = replay.joint.shape
    if replay.summed_out:
        names = [s["name"] for s in sample_sites(guide_trace)]
        kls = {",".join(names): (log_density(guide_trace) - replay.latent).mean(0)} if names else {}
        return (replay.joint - replay.latent).mean(0), kls
    recon, kls = elbo_parts(replay.trace, guide_trace, analytic_kl)
    return (recon + torch.zeros(shape, device=replay.joint.device)).mean(0), {
        name: kl.expand(shape).mean(0) for name, kl in kls.items()
    }


def posterior_means(guide_trace, sites, batch_size: int) -> torch.Tensor:
    r""":math:`E_q[z]` of the given continuous and binary sites, flattened and concatenated per
    datum: ``[B, D]`` (``D = 0`` without such sites), the codes a decoder reads. A binary unit's
    mean is its probability :math:`q(h_j = 1 \mid x)`, so it is active when that varies across
    data; categorical sites have no mean and count no active units, nor have sites whose q has
    no closed-form mean.

    The guide's distributions carry the particle dimension first; their means agree along it.
    """
    fns = [guide_trace.nodes[s]["fn"] for s in sites if s in guide_trace.nodes]
    means = [m.mean(0).reshape(batch_size, -1) for fn in fns if has_mean(fn) and (m := _mean(fn)) is not None]
    return torch.cat(means, -1) if means else torch.zeros(batch_size, 0)


def _mean(fn) -> torch.Tensor | None:
    """:math:`E_q[z]`, or ``None`` where q has no closed-form mean (a normal pushed through a
    bijection onto an interval or a simplex): such a site counts no active units."""
    try:
        return fn.mean
    except NotImplementedError:
        return None


def mutual_information(guide_trace, sites) -> torch.Tensor:
    r"""He et al.'s (2019) estimate of :math:`I_q(x; z)` over one batch, from a guide trace with
    one draw per datum:

    .. math:: I = \frac1B \sum_b \Big( -H[q(z\mid x_b)] - \log \frac1B \sum_j q(z_b \mid x_j) \Big)

    with the aggregate posterior :math:`q(z)` approximated by the batch's mixture. The estimate
    is at most :math:`\log B`. Without latent sites it is 0.

    References: J. He et al. Lagging Inference Networks and Posterior Collapse in Variational
    Autoencoders. ICLR 2019.
    """
    cross, neg_entropy = 0.0, 0.0
    sites = [s for s in sites if s in guide_trace.nodes]
    for s in sites:
        q, z = guide_trace.nodes[s]["fn"], guide_trace.nodes[s]["value"]  # batch [1, B]; z [1, B, ...]
        cross = cross + q.log_prob(z.transpose(0, 1))  # [B, B]: z_b under every q_j
        try:
            neg_entropy = neg_entropy - q.entropy()
        except NotImplementedError:
            neg_entropy = neg_entropy + q.log_prob(z)
    if not sites:
        return torch.tensor(0.0)
    batch = cross.shape[0]
    return torch.as_tensor(neg_entropy).mean() - (torch.logsumexp(cross, 1) - math.log(batch)).mean()


def chunk_size_for(story, batch, num_samples: int, max_elements: int = 1 << 24) -> int:
    """Samples per pass so that ``S_chunk x story.sample_cost(batch)`` stays under ``max_elements``."""
    return max(1, min(num_samples, max_elements // max(1, story.sample_cost(batch))))


@torch.no_grad()
def iw_log_likelihood(story, guide, batch, num_samples: int = 500, params=None, chunk: int | None = None):
    r"""Importance-weighted bound :math:`\log \frac1S \sum_s w_s \le \log p(x)`, per datum.

    Samples are drawn in chunks (``chunk`` per pass, by default sized by
    :func:`chunk_size_for`) so memory stays bounded for large ``S``; the chunks' log weights
    are combined with one log-sum-exp.

    References: Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """
    chunk = chunk or chunk_size_for(story, batch, num_samples)
    parts = []
    for start in range(0, num_samples, chunk):
        parts.append(log_weights(story, guide, batch, min(chunk, num_samples - start), params))
    return torch.logsumexp(torch.cat(parts), 0) - math.log(num_samples)


def log_joint(story, batch, values: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\log p(x, z)` per draw and datum, ``[S, B]``, of the story replayed on ``values``
    (``{site: [S, B, ...]}``), finite discrete sites without a value summed out
    (:func:`~fabula.particles.replay`)."""
    return replay(story, batch, values_trace(values), next(iter(values.values())).shape[0]).joint


def support_transforms(story, batch, sites) -> dict:
    """``{site: T}`` (:func:`~fabula.traces.unconstraining`) of ``sites`` in a prior trace of
    ``story.model`` on ``batch`` (:func:`~fabula.traces.prior_trace`)."""
    trace = prior_trace(story, batch)
    owner = type(story).__name__
    return {s: unconstraining(trace.nodes[s], owner, "a proposal fitted to draws") for s in sites}


@torch.no_grad()
def proposal_log_weights(story, batch, draws: dict[str, torch.Tensor], num_samples: int, df: float = 10.0):
    r"""``[S, B]`` log weights :math:`\log p(x, z_s) - \log r(z_s)`, :math:`z_s \sim r`, with
    :math:`r` per datum a multivariate Student-t (``df``) matching the mean and covariance of
    that datum's posterior ``draws`` (``{site: [N, B, ...]}``; continuous sites only) in
    unconstrained space: :math:`u = T^{-1}(z)` with :math:`T` the ``biject_to`` of each site's
    support (the identity for a real one), so that :math:`\log r(z) = \log r_u(u) - \log
    |\det \partial T / \partial u|` and every proposal lies on the support."""
    sites = list(draws)
    for s in sites:
        if draws[s].dtype in (torch.long, torch.int, torch.bool):
            raise UsageError(f"a proposal fitted to draws needs continuous latents; site {s!r} is discrete")
    transforms = support_transforms(story, batch, sites)
    n, size = draws[sites[0]].shape[:2]
    shapes = {s: draws[s].shape[2:] for s in sites}
    free = {s: transforms[s].inv(draws[s].double()).reshape(n, size, -1) for s in sites}
    z = torch.cat([free[s] for s in sites], -1)  # [N, B, D], unconstrained
    dim = z.shape[-1]
    if n <= dim:
        raise UsageError(f"a proposal fitted to draws needs more draws than latent dimensions ({n} <= {dim})")
    loc = z.mean(0)
    centred = (z - loc).transpose(0, 1)  # [B, N, D]
    cov = centred.transpose(1, 2) @ centred / (n - 1) + 1e-8 * torch.eye(dim, dtype=z.dtype, device=z.device)
    scale_tril = torch.linalg.cholesky(cov * (df - 2) / df)
    proposal = MultivariateStudentT(torch.tensor(df, dtype=z.dtype, device=z.device), loc, scale_tril)
    chunk = chunk_size_for(story, batch, num_samples)
    parts = []
    for start in range(0, num_samples, chunk):
        sample = proposal.sample((min(chunk, num_samples - start),))  # [S, B, D]
        log_r = proposal.log_prob(sample)
        values, offset = {}, 0
        for s in sites:
            width = free[s].shape[-1]
            u = sample[..., offset : offset + width].reshape(
                *sample.shape[:2], *transforms[s].inverse_shape(shapes[s])
            )
            value, jacobian = constrained(transforms[s], u, batch_dims=2)
            log_r = log_r - jacobian
            values[s] = value.to(draws[s].dtype)
            offset += width
        parts.append(log_joint(story, batch, values).double() - log_r)
    return torch.cat(parts)


def pareto_khat(logw: torch.Tensor) -> torch.Tensor:
    r"""Pareto :math:`\hat k` per datum of log importance weights ``[S, B]``; weights equal up to
    rounding (the proposal is the target) have no tail to fit and get :math:`-\infty`.

    References: A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
    Sampling. JMLR 2024.
    """
    with warnings.catch_warnings():
        # ArviZ 0.2x announces its 1.x refactor on import; fabula uses the 0.2x API.
        warnings.filterwarnings(
            "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
        )
        import arviz as az

    logw = logw.T.double().cpu()
    _, khat = az.psislw(logw.numpy())
    return torch.where(logw.std(-1) < 1e-4, float("-inf"), torch.as_tensor(khat))
