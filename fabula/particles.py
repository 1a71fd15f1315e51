r"""The story replayed on draws of its latents: the particle dimension as a checked contract, and
finite discrete sites summed out.

Estimators score ``S`` draws per datum in one pass by tracing the story inside a ``"particles"``
plate left of the ``"data"`` plate, which a story written with ``dim=-1`` reductions follows
(every site's batch shape ``[S, B]``). A story that reduces over a fixed axis (``softmax(dim=1)``)
or normalises over the batch (``BatchNorm1d`` on a 3-D input) does not: before the first
vectorised replay of a story, :func:`replay` checks on the batch that two draws replayed at once
give the shapes and log densities of the same draws replayed one at a time, and where they do not
it replays draw by draw from then on, saying so once (:class:`ParticleWarning`). A story is
replayed in evaluation mode by :func:`~fabula.evaluation.evaluate`, so batch statistics are the
running ones there.

A latent site of the story that the draws do not hold and whose support is finite (a categorical
or a scalar Bernoulli, or any site the story marks ``infer={"enumerate": "parallel"}``) is summed
out exactly with Pyro's ``poutine.enum``, as ``TraceEnum_ELBO`` does:
:math:`\log p(x, z) = \log \sum_c p(x, z, c)`, over the joint values of every such site (at most
:data:`MAX_ENUMERATION` per datum, else refused naming the size). Any other latent site without a
value is refused.
"""

from __future__ import annotations

import math
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine

from fabula.errors import FabulaError, UsageError
from fabula.models.story import DATA_DIM
from fabula.traces import (
    PARTICLE_DIM,
    base_distribution,
    is_binary,
    log_density,
    prior_trace,
    sample_sites,
    site_log_prob,
    trace_guide,
)

MAX_ENUMERATION = 1 << 16
"""The most joint values of a datum's summed-out sites that :func:`replay` enumerates."""

_TOLERANCE = {"rtol": 1e-4, "atol": 1e-3}


class ParticleWarning(UserWarning):
    """A story that does not broadcast over a leading particle dimension: its draws are replayed
    one at a time (right, and slower)."""


@dataclass
class Replay:
    r"""The story replayed on ``S`` draws of a batch of ``B`` data.

    ``trace`` holds the replayed sites that were not summed out, each with its ``"log_prob"``
    (:func:`~fabula.traces.site_log_prob`, batch shape ``[S, B]``; its ``"fn"`` is ``None`` when
    the draws were replayed one at a time). ``joint`` is :math:`\log p(x, z)` and ``latent``
    :math:`\log p(z)` per draw and datum (``[S, B]``), the sites in ``summed_out`` summed over
    their values in both; ``vectorised`` says how the draws were replayed."""

    trace: poutine.Trace
    joint: torch.Tensor
    latent: torch.Tensor
    summed_out: tuple[str, ...]
    vectorised: bool


def values_trace(values: dict[str, torch.Tensor]) -> poutine.Trace:
    """A trace holding ``values`` (``{site: tensor}``) as latent draws, to replay a story on."""
    trace = poutine.Trace()
    for name, value in values.items():
        trace.add_node(name, name=name, type="sample", is_observed=False, value=value, infer={}, fn=None)
    return trace


def guide_draws(guide, batch, num_samples: int, params=None) -> poutine.Trace:
    """The guide's trace with ``num_samples`` draws per datum on the particle plate
    (:func:`~fabula.traces.trace_guide`), refused where a site's draws are not shaped ``[S, B, ...]``
    (a guide that does not let the plates shape its sites)."""
    trace = trace_guide(guide, batch, num_samples, params)
    shape = (num_samples, batch.size)
    for site in sample_sites(trace):
        value = site["value"]
        site["log_prob"] = log_prob = site_log_prob(site)  # kept: every estimator reads it again
        if tuple(value.shape[:2]) != shape or torch.broadcast_shapes(log_prob.shape, shape) != shape:
            raise UsageError(
                f"guide site {site['name']!r} of {type(guide).__name__} drew shape {tuple(value.shape)} for "
                f"{num_samples} draws of {batch.size} data (log density {tuple(log_prob.shape)}): a guide samples "
                "inside the data plate and leaves the batch shape to the plates, [S, B, ...]"
            )
    return trace


def run_traces(story, guide, batch, num_samples: int = 1, params=None) -> tuple[Replay, poutine.Trace]:
    """``num_samples`` draws of the guide per datum (with ``params``, :func:`guide_draws`) and the
    story replayed on them (:func:`replay`): ``(replay, guide_trace)``."""
    draws = guide_draws(guide, batch, num_samples, params)
    return replay(story, batch, draws, num_samples), draws


def unsummable(story, batch) -> str | None:
    r"""Why the latents of ``story`` on ``batch`` cannot all be summed out for its exact
    :math:`\log p(x)` (a site that is not finite, or more than :data:`MAX_ENUMERATION` joint
    values per datum), or ``None`` where they can."""
    size = 1
    for site in sample_sites(prior_trace(story, batch)):
        if site["is_observed"]:
            continue
        if not site["fn"].has_enumerate_support:
            return f"its latent site {site['name']!r} is {_not_enumerable(site['fn'])}"
        size *= site["fn"].enumerate_support(expand=False).shape[0]
    if size > MAX_ENUMERATION:
        return f"its latents take {size} joint values per datum, above {MAX_ENUMERATION}"
    return None


@torch.no_grad()
def enumerated_posterior(story, batch) -> dict[str, torch.Tensor]:
    r"""The exact posterior of a story whose every latent site is finite (:func:`unsummable` says why not), by
    enumeration: for each site its marginal :math:`p(c \mid x_b)` over its values, ``{site:
    [B, K]}`` in the order of ``enumerate_support``; refused, naming the size, where the joint
    values exceed :data:`MAX_ENUMERATION` or a latent is not finite."""
    reason = unsummable(story, batch)
    if reason is not None:
        raise UsageError(f"{type(story).__name__} has no exact posterior by enumeration: {reason}")
    trace, summed = _trace(story, batch, values_trace({}), DATA_DIM - 1)
    total = torch.as_tensor(log_density(trace), device=story.device)
    total = total.expand(*total.shape[:-1], batch.size)
    log_z = total.reshape(-1, batch.size).logsumexp(0)
    out = {}
    for name in summed:
        dim = trace.nodes[name]["infer"]["_enumerate_dim"]
        others = [d for d in range(total.dim() - 1) if d != total.dim() + dim]
        marginal = total.logsumexp(others, keepdim=True) if others else total
        out[name] = (marginal.reshape(-1, batch.size) - log_z).exp().T
    return out


# story -> {training flag: broadcasts}; a story's answer is kept while it lives
_BROADCASTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_WARNED: set[type] = set()


def replay(story, batch, draws: poutine.Trace, num_samples: int) -> Replay:
    r"""``story.model`` on ``batch`` replayed on ``draws`` (a guide's trace with ``num_samples``
    draws per datum on the particle plate, or :func:`values_trace` of ``{site: [S, B, ...]}``),
    vectorised when the story broadcasts over the particle plate, else draw by draw; finite
    discrete sites without a draw summed out (module docstring)."""
    if _broadcasts(story, batch, draws, num_samples):
        return _vectorised(story, batch, draws, num_samples)
    return _one_at_a_time(story, batch, draws, num_samples)


def _broadcasts(story, batch, draws, num_samples) -> bool:
    known = _BROADCASTS.setdefault(story, {})
    if story.training not in known:
        with torch.no_grad(), _buffers_kept(story):
            known[story.training] = reason = _vectorisation_fault(story, batch, draws, num_samples)
        if reason is not None and type(story) not in _WARNED:
            _WARNED.add(type(story))
            warnings.warn(
                f"{type(story).__name__} does not broadcast over a leading particle dimension ({reason}); "
                "fabula replays its draws one at a time. A story broadcasts when it reduces with dim=-1 and "
                "normalises nothing over the batch, e.g. softmax(logits, dim=-1), not dim=1",
                ParticleWarning,
                stacklevel=3,
            )
    return known[story.training] is None


@contextmanager
def _buffers_kept(story):
    """The story's buffers (a batch norm's running statistics) as they were before the block."""
    saved = {name: b.clone() for name, b in story.named_buffers()}
    try:
        yield
    finally:
        for name, b in story.named_buffers():
            b.copy_(saved[name])


def _vectorisation_fault(story, batch, draws, num_samples) -> str | None:
    """Why two draws of ``draws`` replayed at once differ from the same draws replayed one at a
    time (``None``: they agree)."""
    two = min(num_samples, 2)
    first = _sliced(draws, slice(0, two))
    try:
        together = _vectorised(story, batch, first, two)
    except FabulaError:
        raise
    except (RuntimeError, ValueError, IndexError) as error:
        return f"replaying {two} draws at once fails: {str(error).splitlines()[0]}"
    apart = _one_at_a_time(story, batch, first, two)
    pairs = [("the log joint", together.joint, apart.joint)]
    if not together.summed_out:
        pairs += [
            (f"site {s['name']!r}", s["log_prob"], apart.trace.nodes[s["name"]]["log_prob"])
            for s in sample_sites(together.trace)
        ]
    for what, got, expected in pairs:
        if got.shape != expected.shape:
            return f"{what} has shape {tuple(got.shape)} for {two} draws at once, {tuple(expected.shape)} one at a time"
        if not torch.allclose(got, expected, **_TOLERANCE):
            return (
                f"{what} of a draw differs by {float((got - expected).abs().max()):.3g} replayed with another"
            )
    return None


def _sliced(draws: poutine.Trace, index) -> poutine.Trace:
    """The draws at ``index`` of the particle dimension (an int drops it)."""
    return values_trace({s["name"]: s["value"][index] for s in sample_sites(draws)})


def _enumerating(model, draws: poutine.Trace, first_dim: int):
    """``model`` replayed on ``draws``, its finite latent sites without a draw enumerated in
    parallel from ``first_dim`` leftwards."""

    def config(msg):
        enumerable = (
            not msg["is_observed"] and msg["name"] not in draws.nodes and msg["fn"].has_enumerate_support
        )
        return {"enumerate": "parallel"} if enumerable else {}

    replayed = poutine.replay(poutine.infer_config(model, config), trace=draws)
    return poutine.enum(replayed, first_available_dim=first_dim)


def _trace(story, batch, draws, first_dim) -> tuple[poutine.Trace, tuple[str, ...]]:
    """The replayed trace with each site's ``"log_prob"``, and the sites summed out."""
    trace = poutine.trace(_enumerating(story.model, draws, first_dim)).get_trace(batch)
    summed, size = [], 1
    for site in sample_sites(trace):
        site["log_prob"] = site_log_prob(site)
        if site["is_observed"] or site["name"] in draws.nodes:
            continue
        if site["infer"].get("_enumerate_dim") is None:
            raise UsageError(_unsummable(story, site))
        summed.append(site["name"])
        size *= site["value"].shape[site["infer"]["_enumerate_dim"]]
    if size > MAX_ENUMERATION:
        raise UsageError(
            f"summing out {summed} of {type(story).__name__} takes {size} joint values per datum, "
            f"above {MAX_ENUMERATION}: give the guide a site for some of them"
        )
    return trace, tuple(summed)


def _unsummable(story, site) -> str:
    return (
        f"latent site {site['name']!r} of {type(story).__name__} has no draw and is "
        f"{_not_enumerable(site['fn'])}: give the guide a site for it"
    )


def _not_enumerable(fn) -> str:
    """What a latent's distribution ``fn`` without an enumerable support is."""
    if fn.support.is_discrete:
        return f"{_support_size(fn)} values per datum, not enumerable site by site"
    return "continuous"


def _support_size(fn) -> str:
    """The values one datum's draw of ``fn`` takes: ``K^units`` for ``units`` coordinates of K
    values each (binary units: ``2^units``), ``"unbounded"`` without a finite support."""
    base = base_distribution(fn)
    if is_binary(fn):
        per, units = 2, math.prod(fn.event_shape)
    elif base.has_enumerate_support:
        per = base.enumerate_support(expand=False).shape[0]
        units = math.prod(fn.event_shape[: len(fn.event_shape) - len(base.event_shape)])
    else:
        return "unbounded"
    return f"{per}^{units}" if units > 1 else str(per)


def _summed(trace, observed: bool | None, shape: tuple[int, ...], device) -> torch.Tensor:
    """The sum of the sites' log densities (all, or the observed or latent ones) with the
    enumerated dimensions summed out by log-sum-exp, of ``shape``."""
    total = torch.as_tensor(log_density(trace, observed), device=device)
    batch_dims = len(shape)
    if total.dim() > batch_dims:
        total = total.reshape(-1, *total.shape[total.dim() - batch_dims :]).logsumexp(0)
    return total.expand(shape)


def _vectorised(story, batch, draws, num_samples) -> Replay:
    with pyro.plate("particles", num_samples, dim=PARTICLE_DIM):
        trace, summed = _trace(story, batch, draws, PARTICLE_DIM - 1)
    shape, device = (num_samples, batch.size), story.device
    joint, latent = _summed(trace, None, shape, device), _summed(trace, False, shape, device)
    return Replay(_kept(trace, summed), joint, latent, summed, True)


def _one_at_a_time(story, batch, draws, num_samples) -> Replay:
    traces, joints, latents = [], [], []
    for s in range(num_samples):
        trace, summed = _trace(story, batch, _sliced(draws, s), DATA_DIM - 1)
        traces.append(_kept(trace, summed))
        joints.append(_summed(trace, None, (batch.size,), story.device))
        latents.append(_summed(trace, False, (batch.size,), story.device))
    stacked = poutine.Trace()
    for name, site in traces[0].nodes.items():
        stacked.add_node(
            name,
            name=name,
            type="sample",
            is_observed=site["is_observed"],
            value=torch.stack([t.nodes[name]["value"] for t in traces]),
            log_prob=torch.stack([t.nodes[name]["log_prob"] for t in traces]),
            infer=site["infer"],
            fn=None,
            scale=1.0,
            mask=None,
        )
    return Replay(stacked, torch.stack(joints), torch.stack(latents), summed, False)


def _kept(trace, summed_out) -> poutine.Trace:
    """``trace`` without the plates' and the summed-out sites."""
    kept = poutine.Trace()
    for site in sample_sites(trace):
        if site["name"] not in summed_out:
            kept.add_node(site["name"], **site)
    return kept
