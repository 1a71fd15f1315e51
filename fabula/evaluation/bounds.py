r"""Per-datum bounds on :math:`\log p(x)`: the ELBO and the importance-weighted bound.

All estimators trace the story once with the samples on an outer ``"particles"`` plate
(left of the ``"data"`` plate), so ``S`` samples cost one vectorised pass, never a Python loop.
"""

from __future__ import annotations

import math
import warnings

import pyro
import torch
from pyro import poutine
from pyro.distributions import MultivariateStudentT
from pyro.distributions.util import scale_and_mask
from torch.distributions import constraints, kl_divergence

from fabula.errors import UsageError
from fabula.traces import PARTICLE_DIM, constrained, prior_trace, run_traces, sample_sites, unconstraining


def log_weights(story, guide, batch, num_samples: int, params=None) -> torch.Tensor:
    r""":math:`\log w_s = \log p(x, z_s) - \log q(z_s \mid x)`, shape ``[S, B]``."""
    model_trace, guide_trace = run_traces(story, guide, batch, num_samples, params)
    logw = 0.0
    for site in sample_sites(model_trace):
        logw = logw + site["fn"].log_prob(site["value"])
    for site in sample_sites(guide_trace):
        logw = logw - site["fn"].log_prob(site["value"])
    return torch.as_tensor(logw).expand(num_samples, batch.size)


def elbo_terms(story, guide, batch, num_samples: int = 1, params=None, analytic_kl: bool = True):
    r"""Per-datum reconstruction :math:`E_q[\log p(x\mid z)]` and :math:`KL(q\|p)` of each latent site.

    Expectations are averaged over ``num_samples`` draws (see :func:`terms_from_traces`).

    :returns: ``(recon [B], {site: kl [B]})``.
    """
    return terms_from_traces(*run_traces(story, guide, batch, num_samples, params), analytic_kl)


def terms_from_traces(model_trace, guide_trace, analytic_kl: bool = True):
    r"""Reconstruction and per-site KL, per datum, from traces made by :func:`run_traces`.

    The KL is analytic where ``torch.distributions.kl_divergence`` knows the pair (and
    ``analytic_kl``), else the Monte Carlo estimate :math:`\log q(z) - \log p(z)`. Site scales
    (KL annealing) are applied; both terms are averaged over the particle dimension.
    """
    recon = 0.0
    kls = {}
    for site in sample_sites(model_trace):
        if site["is_observed"]:
            recon = recon + scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])
            continue
        name = site["name"]
        q = guide_trace.nodes[name]
        kl = None
        if analytic_kl:
            try:
                kl = kl_divergence(q["fn"], site["fn"])
            except NotImplementedError:
                pass
        if kl is None:
            kl = q["fn"].log_prob(q["value"]) - site["fn"].log_prob(site["value"])
        kls[name] = scale_and_mask(kl, q["scale"], q["mask"]).mean(0)
    return recon.mean(0), kls


def _has_mean(fn) -> bool:
    """Continuous sites, and binary ones (whose mean is :math:`q(h_j = 1)`); not categorical ones."""
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return not support.is_discrete or support is constraints.boolean


def posterior_means(guide_trace, sites, batch_size: int) -> torch.Tensor:
    r""":math:`E_q[z]` of the given continuous and binary sites, flattened and concatenated per
    datum: ``[B, D]`` (``D = 0`` without such sites). A binary unit's mean is its probability
    :math:`q(h_j = 1 \mid x)`, so it is active when that varies across data; categorical sites
    have no mean and no active units, nor have sites whose q has no closed-form mean.

    The guide's distributions carry the particle dimension first; their means agree along it.
    """
    fns = [guide_trace.nodes[s]["fn"] for s in sites]
    means = [m.mean(0).reshape(batch_size, -1) for fn in fns if _has_mean(fn) and (m := _mean(fn)) is not None]
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
    r""":math:`\log p(x, z)` per draw and datum, ``[S, B]``, of the story conditioned on
    ``values`` (``{site: [S, B, ...]}``, every latent site)."""
    with pyro.plate("particles", next(iter(values.values())).shape[0], dim=PARTICLE_DIM):
        trace = poutine.trace(poutine.condition(story.model, data=values)).get_trace(batch)
    unset = [s["name"] for s in sample_sites(trace) if not s["is_observed"]]
    if unset:
        raise UsageError(f"the draws hold no values of the latent sites {unset}")
    return sum(site["fn"].log_prob(site["value"]) for site in sample_sites(trace))


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
