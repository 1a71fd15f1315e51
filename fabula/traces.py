"""Trace plumbing shared by inference and evaluation: the particle plate left of the data
plate, tracing a guide at given variational parameters λ, each site's log density and the
ELBO's terms as Pyro's traces score them (scales, masks, auxiliary guide sites), and the
unconstraining bijections of latent supports. Replaying a story on draws is
:mod:`fabula.particles`.

``S`` draws per datum are one vectorised pass: every site's batch shape is ``[S, B]``.
"""

from __future__ import annotations

import warnings

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch.distributions import Independent, constraints, kl_divergence

from fabula.checkpoint import preserved_rng
from fabula.errors import UsageError
from fabula.models.story import DATA_DIM

PARTICLE_DIM = DATA_DIM - 1
"""The dimension of the ``"particles"`` plate (draws per datum), just left of the data plate."""


def trace_pair(model, guide, args, kwargs):
    """One draw: the guide's trace and the model replayed on it, ``(model_trace, guide_trace)``."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def trace_guide(guide, batch, num_samples: int = 1, params=None):
    """The guide's trace with ``num_samples`` draws per datum (site batch shapes ``[S, B]``)."""
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        return poutine.trace(guide).get_trace(batch, params)


def sample_sites(trace) -> list[dict]:
    """The trace's sample sites (observed and latent), without plates' subsample sites."""
    return [site for site in trace.nodes.values() if site["type"] == "sample" and not site_is_subsample(site)]


def site_log_prob(site: dict) -> torch.Tensor:
    r"""A sample site's log density as Pyro's traces score it, :math:`m \cdot s \cdot \log p(v)`:
    its ``poutine.scale`` :math:`s` and ``poutine.mask`` :math:`m` applied (``trace.compute_log_prob``);
    a site that already holds its ``"log_prob"`` (a replay draw by draw) gives that."""
    if "log_prob" in site:
        return site["log_prob"]
    return scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"])


def log_density(trace, observed: bool | None = None) -> torch.Tensor | float:
    """The sum of the trace's :func:`site_log_prob` (broadcast over the sites' batch shapes): of
    every sample site, or of the observed (``True``) or latent (``False``) ones only."""
    return sum(
        (site_log_prob(s) for s in sample_sites(trace) if observed is None or s["is_observed"] == observed),
        0.0,
    )


def analytic_kl_sites(model_trace, guide_trace) -> set[str]:
    r"""The latent sites whose analytic :math:`KL(q_s \| p_s)` at the guide's draws is an unbiased
    term of the ELBO: those for which every latent site the story draws before ``s`` (on which
    :math:`p_s` may depend) the guide draws before ``s`` too, so that neither :math:`q_s` nor
    :math:`p_s` depends on :math:`z_s` itself. Pyro's ``TraceMeanField_ELBO`` asks for the same
    order of all sites (a sufficient condition) and only warns when it is broken."""
    latent = [s["name"] for s in sample_sites(model_trace) if not s["is_observed"]]
    position = {s["name"]: i for i, s in enumerate(sample_sites(guide_trace))}
    return {
        name
        for i, name in enumerate(latent)
        if name in position and all(position.get(earlier, -1) < position[name] for earlier in latent[:i])
    }


_WARNED_ORDERS: set[tuple[str, ...]] = set()


def elbo_parts(
    model_trace, guide_trace, analytic_kl: bool = True
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""The ELBO's terms from a guide trace and the story replayed on it, each of its site's batch
    shape (nothing summed): the observed sites' :math:`\log p(x \mid z)` and, per latent site,
    :math:`KL(q \| p)`, analytic where torch knows the pair, ``analytic_kl`` is asked and the
    order of the draws keeps it unbiased (:func:`analytic_kl_sites`), else the Monte Carlo term
    :math:`\log q(z) - \log p(z)`. A guide site the story does not have (an auxiliary variable)
    adds :math:`\log q(a)`, as in Pyro's ELBOs. Scales and masks count as in Pyro's traces
    (:func:`site_log_prob`). A latent site of the story without a guide site is refused."""
    safe = analytic_kl_sites(model_trace, guide_trace) if analytic_kl else set()
    latent = [s["name"] for s in sample_sites(model_trace) if not s["is_observed"]]
    unsafe = tuple(n for n in latent if n not in safe and n in guide_trace.nodes and analytic_kl)
    if unsafe and unsafe not in _WARNED_ORDERS:
        _WARNED_ORDERS.add(unsafe)
        order = [s["name"] for s in sample_sites(guide_trace) if s["name"] in latent]
        warnings.warn(
            f"the guide draws {order}, the story {latent}: an analytic KL of {list(unsafe)} at the guide's draws "
            "would be biased, so their Monte Carlo term log q(z) - log p(z) is used instead",
            TraceOrderWarning,
            stacklevel=2,
        )
    reconstruction, kls = 0.0, {}
    for site in sample_sites(model_trace):
        if site["is_observed"]:
            reconstruction = reconstruction + site_log_prob(site)
            continue
        name = site["name"]
        q = guide_trace.nodes.get(name)
        if q is None:
            raise UsageError(
                f"the story's latent site {name!r} has no site in the guide: give the guide one, or sum it out "
                "(a finite discrete site marked infer={'enumerate': 'parallel'}, with TraceEnum_ELBO)"
            )
        kl = None
        if name in safe and site["fn"] is not None:
            try:
                kl = scale_and_mask(kl_divergence(q["fn"], site["fn"]), q["scale"], q["mask"])
            except NotImplementedError:
                pass
        kls[name] = site_log_prob(q) - site_log_prob(site) if kl is None else kl
    for q in sample_sites(guide_trace):
        if q["name"] not in model_trace.nodes:
            kls[q["name"]] = site_log_prob(q)
    return reconstruction, kls


class TraceOrderWarning(UserWarning):
    """The guide draws its sites in an order that makes an analytic KL biased; fabula uses the
    Monte Carlo term there (the number stays right, its variance grows)."""


def base_distribution(fn):
    """``fn`` without its ``Independent`` wrappers (``.to_event``): the distribution of one unit."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn


def is_binary(fn) -> bool:
    """Whether every unit of ``fn``'s draws is 0 or 1 (a Bernoulli, or binary units drawn jointly)."""
    support = fn.support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.boolean


def has_mean(fn) -> bool:
    """Continuous sites, and binary ones (whose mean is :math:`q(h_j = 1)`); not categorical ones."""
    return not fn.support.is_discrete or is_binary(fn)


def kl_per_dim(q, p):
    """Analytic :math:`KL(q \\| p)` per latent coordinate (``Independent`` wrappers removed)."""
    return kl_divergence(base_distribution(q), base_distribution(p))


def prior_trace(story, batch):
    """A trace of ``story.model`` on ``batch`` with its latents drawn from the prior, without
    gradients and with the caller's random stream left as it was."""
    with preserved_rng(story.device), torch.no_grad():
        return poutine.trace(story.model).get_trace(batch)


@torch.no_grad()
def prior_latents(story, batch) -> dict[str, torch.Tensor]:
    """A draw of every latent site of ``story`` on ``batch`` from its prior (the story traced on
    the batch, nothing conditioning its latents): ``{site: [B, ...]}``, from the caller's
    random stream."""
    trace = poutine.trace(story.model).get_trace(batch)
    return {s["name"]: s["value"] for s in sample_sites(trace) if not s["is_observed"]}


def unconstraining(site: dict, owner: str, purpose: str):
    """Pyro's ``biject_to(support)`` of a latent ``site``: the bijection from unconstrained space
    onto its support (the identity for a real-valued one), as Pyro's NUTS uses. A discrete site,
    or a support with no such bijection, is refused, naming the site of ``owner`` and ``purpose``
    (what needs continuous, unconstrainable latents)."""
    name, support = site["name"], site["fn"].support
    if support.is_discrete:
        raise UsageError(f"site {name!r} of {owner} is discrete: {purpose} needs continuous latents")
    try:
        return biject_to(support)
    except NotImplementedError:
        raise UsageError(
            f"site {name!r} of {owner} has support {support}, onto which Pyro maps no unconstrained space: "
            f"{purpose} needs one; reparametrize it in the story"
        ) from None


def constrained(transform, u: torch.Tensor, batch_dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(T(u), log |det dT/du|)`` of a transform from :func:`unconstraining` at ``u``, the
    log-Jacobian summed over every dimension right of the first ``batch_dims``."""
    value = transform(u)
    jacobian = transform.log_abs_det_jacobian(u, value)
    return value, jacobian.reshape(*u.shape[:batch_dims], -1).sum(-1)
