"""Trace plumbing shared by inference and evaluation: the particle plate left of the data
plate, tracing a guide at given variational parameters λ, and replaying a story on its draws.

``S`` draws per datum are one vectorised pass: every site's batch shape is ``[S, B]``.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.distributions import Independent
from pyro.distributions.transforms import biject_to
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

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


def run_traces(story, guide, batch, num_samples: int = 1, params=None):
    """Trace the guide (with ``params``) and replay the story on its ``num_samples`` draws.

    Returns ``(model_trace, guide_trace)``; every site's batch shape is ``[S, B]``.
    """
    guide_trace = trace_guide(guide, batch, num_samples, params)
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        model_trace = poutine.trace(poutine.replay(story.model, trace=guide_trace)).get_trace(batch)
    return model_trace, guide_trace


def sample_sites(trace) -> list[dict]:
    """The trace's sample sites (observed and latent), without plates' subsample sites."""
    return [site for site in trace.nodes.values() if site["type"] == "sample" and not site_is_subsample(site)]


def kl_per_dim(q, p):
    """Analytic :math:`KL(q \\| p)` per latent coordinate (``Independent`` wrappers removed)."""
    while isinstance(q, Independent):
        q = q.base_dist
    while isinstance(p, Independent):
        p = p.base_dist
    return kl_divergence(q, p)


def prior_trace(story, batch):
    """A trace of ``story.model`` on ``batch`` with its latents drawn from the prior, without
    gradients and with the caller's random stream left as it was."""
    with preserved_rng(story.device), torch.no_grad():
        return poutine.trace(story.model).get_trace(batch)


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
