r"""The generic twin: NumPyro's NUTS on any story's own torch log joint, called from JAX.

For a story with no hand-written twin, :func:`generic_twin` makes a
:class:`~fabula.backends.numpyro.Twin` whose log joint *is* the story: the potential of datum
:math:`b` is

.. math:: U_b(z) = -\log p(x_b, z) = -\sum_{s} \log p_s(v_{s,b} \mid \mathrm{pa}(s)),

the sum of the log-probabilities of every site of ``story.model`` traced with the latents
given (``poutine.condition``), each site's terms kept per datum by the ``"data"`` plate. JAX
reaches torch through ``jax.pure_callback``; the gradient :math:`\nabla_z \log p(x_b, z)` is
torch's (``torch.autograd.grad``) under a ``jax.custom_vjp`` whose forward pass returns value
and gradient from one torch call and whose backward pass scales that gradient by the
cotangent, so a leapfrog step costs one forward and one backward pass of the story.

:func:`~fabula.backends.numpyro.nuts` vmaps NUTS over chains and data; the callback is
vectorized (``vmap_method="broadcast_all"``), so it receives every lane of a step at once,
``{site: [C, B, ...]}``, and the story is traced once with the chains on a ``"particles"``
plate left of the data plate (the layout importance-weighted evaluation uses): one torch call
per leapfrog step serves all chains and data. Vmapped NUTS runs its lanes in lockstep, so a
step's call includes lanes whose trajectory has already ended (masked out).

Only continuous, real-valued latents inside the data plate are sampled; a discrete site the
story does not sum out, a constrained one, or a site outside the data plate is refused when
the twin is made, by name. Pyro's per-call Python (~1 ms a trace) is paid once per step for
all lanes, rather than once per datum and chain.

References: D. Phan, N. Pradhan, M. Jankowiak. Composable Effects for Flexible and Accelerated
Probabilistic Programming in NumPyro. 2019. JAX documentation, "External callbacks".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import torch
from pyro import poutine
from torch.distributions import constraints

from fabula.backends.numpyro import Twin
from fabula.checkpoint import preserved_rng
from fabula.errors import UsageError
from fabula.traces import PARTICLE_DIM, sample_sites

UNOPTIMIZED = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA options of the generic twin's NUTS program: its time is in torch, and compiling the
program unoptimized takes about half as long."""


def latent_sites(story, batch) -> dict[str, dict]:
    """The latent sites of a prior trace of ``story.model`` on ``batch`` (the caller's random
    stream left as it was), refusing any sample site outside the ``"data"`` plate."""
    with preserved_rng(story.device), torch.no_grad():
        trace = poutine.trace(story.model).get_trace(batch)
    name = type(story).__name__
    for site in sample_sites(trace):
        if "data" not in {frame.name for frame in site["cond_indep_stack"]}:
            raise UsageError(
                f"site {site['name']!r} of {name} is outside the 'data' plate: NumPyro's NUTS samples "
                "per-datum posteriors; use backend='pyro'"
            )
    return {site["name"]: site for site in sample_sites(trace) if not site["is_observed"]}


def _real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def continuous_sites(story, batch) -> dict[str, tuple[int, ...]]:
    """``{site: event shape}`` of the story's latents, all of which must be continuous and
    real-valued with one value per datum (else :class:`~fabula.errors.UsageError`, naming the site)."""
    name, sites = type(story).__name__, latent_sites(story, batch)
    for s, site in sites.items():
        fn = site["fn"]
        if fn.support.is_discrete:
            raise UsageError(
                f"site {s!r} of {name} is discrete: the generic NumPyro path samples continuous latents "
                "only; sum it out in the story, register a twin that does "
                "(fabula.backends.numpyro.register_twin), or use backend='pyro'"
            )
        if not _real(fn.support):
            raise UsageError(
                f"site {s!r} of {name} has support {fn.support}: the generic NumPyro path samples "
                "real-valued latents only; reparametrize it in the story or use backend='pyro'"
            )
        if tuple(fn.batch_shape) != (batch.size,):
            raise UsageError(
                f"site {s!r} of {name} has batch shape {tuple(fn.batch_shape)}, not one value per "
                f"datum ({batch.size},): declare its other dimensions as event dimensions (.to_event)"
            )
    if not sites:
        raise UsageError(f"{name} has no latent site to sample")
    return {s: tuple(site["fn"].event_shape) for s, site in sites.items()}


def torch_log_joint(story, batch, values: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\log p(x_b, v_{p,b})` ``[P, B]`` of ``story`` for latent values
    ``{site: [P, B, ...]}``: the model traced once with the ``P`` draws per datum on the
    ``"particles"`` plate, each site's log-probability (scale and mask applied) summed."""
    particles = next(iter(values.values())).shape[0]
    with pyro.plate("particles", particles, dim=PARTICLE_DIM):
        trace = poutine.trace(poutine.condition(story.model, data=values)).get_trace(batch)
    trace.compute_log_prob()
    shape = (particles, batch.size)
    return sum(site["log_prob"].expand(shape) for site in sample_sites(trace))


def generic_twin(story, batch) -> Twin:
    """The twin of ``story`` on ``batch`` that evaluates the torch story itself (see the module
    docstring); its ``data`` serves only this ``batch``. The latents' dtype is the story's
    (float64 needs ``jax.enable_x64``; otherwise float32)."""
    events = continuous_sites(story, batch)
    size, device = batch.size, story.device
    torch_dtype = next(t for t in story.state_dict().values() if t.is_floating_point()).dtype
    dtype = jax.dtypes.canonicalize_dtype(np.dtype(str(torch_dtype).removeprefix("torch.")))

    def to_torch(z, index):
        # the callback gets every vmapped lane: data last, chains (any further lanes) before it
        index = np.asarray(index)
        lanes = index.shape
        if lanes[-1:] != (size,) or (index.reshape(-1, size) != np.arange(size)).any():
            raise UsageError(
                f"the generic twin's log joint takes the {size} data of its batch in order on its "
                f"last vmapped axis, got datum indices of shape {lanes}"
            )
        values = {
            s: torch.from_numpy(np.array(z[s])).to(device, torch_dtype).reshape(-1, size, *event)
            for s, event in events.items()
        }
        return values, lanes

    # shapes and supports were validated on the probe trace; the hot calls skip Pyro's checks
    def value(z, index):
        values, lanes = to_torch(z, index)
        with torch.no_grad(), pyro.validation_enabled(False):
            log_joint = torch_log_joint(story, batch, values)
        return log_joint.reshape(lanes).cpu().numpy().astype(dtype)

    def value_and_grad(z, index):
        values, lanes = to_torch(z, index)
        with torch.enable_grad(), pyro.validation_enabled(False):
            leaves = [v.requires_grad_() for v in values.values()]
            log_joint = torch_log_joint(story, batch, values)
            # the lanes are independent posteriors: d(sum)/dz of a lane is that lane's gradient
            grads = torch.autograd.grad(log_joint.sum(), leaves)
        out = log_joint.detach().reshape(lanes).cpu().numpy().astype(dtype)
        return out, {
            s: g.reshape(np.shape(z[s])).cpu().numpy().astype(dtype)
            for s, g in zip(events, grads, strict=True)
        }

    def shapes(z, index):
        grads = {s: jax.ShapeDtypeStruct(np.shape(v), dtype) for s, v in z.items()}
        return jax.ShapeDtypeStruct(np.shape(index), dtype), grads

    @jax.custom_vjp
    def log_joint(z, index):  # z: {site: [..., *event]} in the twin's dtype
        return jax.pure_callback(value, shapes(z, index)[0], z, index, vmap_method="broadcast_all")

    def forward(z, index):
        return jax.pure_callback(value_and_grad, shapes(z, index), z, index, vmap_method="broadcast_all")

    def backward(grad, cotangent):
        scaled = {
            s: cotangent.reshape(cotangent.shape + (1,) * (g.ndim - cotangent.ndim)) * g
            for s, g in grad.items()
        }
        return scaled, None

    log_joint.defvjp(forward, backward)

    def data(given):
        if given is not batch:
            raise UsageError(
                "this generic twin was made for another batch: make one per batch, generic_twin(story, batch)"
            )
        return {"index": jnp.arange(size)}

    def twin_log_joint(params, z, datum):
        return log_joint({s: jnp.asarray(z[s], dtype) for s in events}, datum["index"])

    return Twin(tuple(events), {}, twin_log_joint, data, dtype, UNOPTIMIZED)
