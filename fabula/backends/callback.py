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

:func:`~fabula.backends.numpyro.nuts` vmaps NUTS over chains and data; the callbacks are
vectorized (``vmap_method="broadcast_all"``), so they receive every lane of a step at once,
``{site: [C, B, ...]}`` with each lane's datum index, and one torch call per leapfrog step
serves all chains and data: the lanes are traced as one batch of rows of the data plate (a
datum's chains are repeated rows), so any story works as it is. Vmapped NUTS runs its lanes in
lockstep, each step's call including the lanes whose trajectory has already ended; those are
held at the latents of the previous call and get its value and gradient back
(:class:`TorchLogJoint`), so torch computes only the moving lanes.

Only continuous latents inside the data plate are sampled; a constrained one (positive, on an
interval, on the simplex, ...) is sampled as :math:`u` with :math:`v = T(u)`, :math:`T` Pyro's
``biject_to(support)`` as in its NUTS, the potential gaining
:math:`-\log |\det \partial T(u) / \partial u|`, and its draws are returned as :math:`T(u)`. A
discrete site the story does not sum out, a support without such a bijection, or a site outside
the data plate is refused when the twin is made, by name; the batch must be a dataclass of
tensors with the data on their first dimension (:class:`Rows`; fabula's batches are). Pyro's
per-call Python (~1 ms a trace) is paid once per step for all lanes, rather than once per datum
and chain.

References: D. Phan, N. Pradhan, M. Jankowiak. Composable Effects for Flexible and Accelerated
Probabilistic Programming in NumPyro. 2019. JAX documentation, "External callbacks".
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import torch
from pyro import poutine
from torch.distributions.transforms import ComposeTransform, IndependentTransform, Transform

from fabula.backends.numpyro import Twin
from fabula.errors import UsageError
from fabula.traces import constrained, prior_trace, sample_sites, unconstraining

UNOPTIMIZED = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA options of the generic twin's NUTS program: its time is in torch, and compiling the
program unoptimized takes about half as long."""


#: What the generic twin is called in its refusals, with where a faster hand-written one is registered.
GENERIC_PATH = "the generic NumPyro path (a hand-written twin: fabula.backends.numpyro.register_twin)"


def latent_sites(story, batch) -> dict[str, dict]:
    """The latent sites of a prior trace of ``story.model`` on ``batch`` (the caller's random
    stream left as it was), refusing any sample site outside the ``"data"`` plate."""
    trace = prior_trace(story, batch)
    name = type(story).__name__
    for site in sample_sites(trace):
        if "data" not in {frame.name for frame in site["cond_indep_stack"]}:
            raise UsageError(
                f"site {site['name']!r} of {name} is outside the 'data' plate: NumPyro's NUTS samples "
                "per-datum posteriors; use backend='pyro'"
            )
    return {site["name"]: site for site in sample_sites(trace) if not site["is_observed"]}


class Latent(NamedTuple):
    """A latent site as NUTS moves it: its event ``shape`` in unconstrained space and the
    bijection ``transform`` (Pyro's ``biject_to(support)``) from there onto its support."""

    shape: tuple[int, ...]
    transform: Transform


def _identity(transform: Transform) -> bool:
    """Whether ``transform`` is the identity (``biject_to`` of a real support)."""
    while isinstance(transform, IndependentTransform):
        transform = transform.base_transform
    return isinstance(transform, ComposeTransform) and not transform.parts


def continuous_sites(story, batch) -> dict[str, Latent]:
    """The story's latents as NUTS moves them (:class:`Latent`: the identity for a real-valued
    one; a simplex of K loses one dimension), each continuous, with a support that Pyro maps
    onto from unconstrained space, and one value per datum (else
    :class:`~fabula.errors.UsageError`, naming the site)."""
    name, sites, latents = type(story).__name__, latent_sites(story, batch), {}
    for s, site in sites.items():
        fn = site["fn"]
        transform = unconstraining(site, name, GENERIC_PATH)
        if tuple(fn.batch_shape) != (batch.size,):
            raise UsageError(
                f"site {s!r} of {name} has batch shape {tuple(fn.batch_shape)}, not one value per "
                f"datum ({batch.size},): declare its other dimensions as event dimensions (.to_event)"
            )
        latents[s] = Latent(tuple(transform.inverse_shape(fn.event_shape)), transform)
    if not latents:
        raise UsageError(f"{name} has no latent site to sample")
    return latents


def torch_log_joint(story, batch, values: dict[str, torch.Tensor]) -> torch.Tensor:
    r""":math:`\log p(x_b, v_b)` ``[B]`` of ``story`` for latent values ``{site: [B, ...]}``: the
    model traced with them given, each site's log-probability (scale and mask applied) summed."""
    trace = poutine.trace(poutine.condition(story.model, data=values)).get_trace(batch)
    trace.compute_log_prob()
    return sum(site["log_prob"].expand(batch.size) for site in sample_sites(trace))


class Rows:
    """Rows of a batch, repeats allowed: ``rows(index)`` is the batch of data ``index`` (a
    ``[N]`` tensor), every tensor field that holds one row per datum indexed on its first
    dimension. The batch must be a dataclass, as fabula's batches are."""

    def __init__(self, batch):
        if not dataclasses.is_dataclass(batch):
            raise UsageError(
                f"the generic NumPyro twin takes rows of the batch, a dataclass of tensors with the data "
                f"on their first dimension; got a {type(batch).__name__}"
            )
        self.batch = batch
        self.fields = [
            f.name
            for f in dataclasses.fields(batch)
            if isinstance(v := getattr(batch, f.name), torch.Tensor)
            and v.dim() > 0
            and v.shape[0] == batch.size
        ]

    def __call__(self, index: torch.Tensor):
        return dataclasses.replace(self.batch, **{f: getattr(self.batch, f)[index] for f in self.fields})


class LaneHistory:
    """The last ``size`` latents each lane was evaluated at, with their log joint and gradient
    (flat, ``[lanes, D]``), for lanes with data ``index``.

    Vmapped NUTS runs its lanes in lockstep: a lane whose tree is finished is held while the
    others grow theirs, and being held it recomputes the last subtree it built, at the very
    latents it took before. The log joint is a pure function, so those values are looked up here
    instead (a lane's subtrees of up to ``size`` steps are found again).
    """

    def __init__(self, index: np.ndarray, dim: int, dtype, size: int = 64):
        self.index = index
        self.z = np.zeros((index.size, size, dim), dtype)
        self.value = np.zeros((index.size, size), dtype)
        self.grad = np.zeros((index.size, size, dim), dtype)
        self.filled = np.zeros((index.size, size), bool)
        self.next = np.zeros(index.size, np.int64)

    def find(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(found [lanes], value, grad)``: the values are those found, elsewhere arbitrary."""
        match = (self.z == z[:, None]).all(-1) & self.filled
        lanes, slot = np.arange(len(z)), match.argmax(-1)
        return match.any(-1), self.value[lanes, slot], self.grad[lanes, slot]

    def add(self, lanes: np.ndarray, z: np.ndarray, value: np.ndarray, grad: np.ndarray) -> None:
        """Remember the values of ``lanes`` (indices), over each lane's oldest."""
        slot = self.next[lanes]
        self.z[lanes, slot], self.value[lanes, slot], self.grad[lanes, slot] = z, value, grad
        self.filled[lanes, slot] = True
        self.next[lanes] = (slot + 1) % self.z.shape[1]


class TorchLogJoint:
    r"""The story's log joint (and gradient) at the latents of every lane of a vmapped call,
    ``z {site: [*lanes, *event]}`` for data ``index [*lanes]``, as numpy arrays in :attr:`dtype`
    (the story's, float32 unless JAX has float64 enabled). ``z`` is in the unconstrained space of
    ``latents`` (:func:`continuous_sites`): the log joint at :math:`v = T(u)` plus
    :math:`\log |\det \partial T / \partial u|`, the log density of :math:`u`.

    One torch call evaluates the lanes as one batch of rows (:class:`Rows`); differentiated
    calls evaluate only the lanes whose latents are not in their :class:`LaneHistory`. Pyro's
    checks are off in these calls (shapes and supports were validated on the probe trace).
    """

    def __init__(self, story, batch, latents: dict[str, Latent]):
        self.story, self.rows, self.latents = story, Rows(batch), latents
        self.events = {s: latent.shape for s, latent in latents.items()}
        self.constrained = [s for s, latent in latents.items() if not _identity(latent.transform)]
        self.torch_dtype = next(t for t in story.state_dict().values() if t.is_floating_point()).dtype
        self.dtype = jax.dtypes.canonicalize_dtype(np.dtype(str(self.torch_dtype).removeprefix("torch.")))
        self.sizes = [int(np.prod(e, dtype=np.int64)) for e in self.events.values()]
        self.history: LaneHistory | None = None

    def _flat(self, z, index) -> tuple[np.ndarray, np.ndarray]:
        """The lanes' latents as one ``[N, D]`` array (sites concatenated) and their data ``[N]``."""
        index = np.array(index, dtype=np.int64).reshape(-1)
        return np.concatenate([np.reshape(z[s], (index.size, -1)) for s in self.events], 1), index

    def _torch(self, z: np.ndarray, index: np.ndarray):
        device = self.story.device
        flat = torch.from_numpy(z).to(device, self.torch_dtype)
        parts = flat.split(self.sizes, -1)
        values = {s: v.reshape(len(index), *e) for (s, e), v in zip(self.events.items(), parts, strict=True)}
        return values, self.rows(torch.from_numpy(index).to(device))

    def _log_density(self, unconstrained: dict[str, torch.Tensor], batch) -> torch.Tensor:
        """``[N]``: the log joint at the latents ``T(u)`` plus the log-Jacobians of ``T``."""
        values, jacobian = dict(unconstrained), 0.0
        for s in self.constrained:
            values[s], site_jacobian = constrained(self.latents[s].transform, unconstrained[s], batch_dims=1)
            jacobian = jacobian + site_jacobian
        return torch_log_joint(self.story, batch, values) + jacobian

    def value(self, z, index) -> np.ndarray:
        values, batch = self._torch(*self._flat(z, index))
        with torch.no_grad(), pyro.validation_enabled(False):
            log_joint = self._log_density(values, batch)
        return log_joint.cpu().numpy().astype(self.dtype).reshape(np.shape(index))

    def value_and_grad(self, z, index) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        lanes = np.shape(index)
        flat, index = self._flat(z, index)
        if self.history is None or not np.array_equal(self.history.index, index):
            self.history = LaneHistory(index, flat.shape[1], self.dtype)
        found, value, grad = self.history.find(flat)
        todo = np.flatnonzero(~found)
        if todo.size:
            values, batch = self._torch(flat[todo], index[todo])
            with torch.enable_grad(), pyro.validation_enabled(False):
                leaves = [v.requires_grad_() for v in values.values()]
                log_joint = self._log_density(values, batch)
                # the lanes are independent posteriors: d(sum)/dz of a lane is that lane's gradient
                grads = torch.autograd.grad(log_joint.sum(), leaves)
            value[todo] = log_joint.detach().cpu().numpy()
            grad[todo] = torch.cat([g.reshape(todo.size, -1) for g in grads], -1).cpu().numpy()
            self.history.add(todo, flat[todo], value[todo], grad[todo])
        parts = np.split(grad, np.cumsum(self.sizes)[:-1], -1)
        return value.reshape(lanes), {
            s: g.reshape(*lanes, *e) for (s, e), g in zip(self.events.items(), parts, strict=True)
        }


def generic_twin(story, batch) -> Twin:
    """The twin of ``story`` on ``batch`` that evaluates the torch story itself (see the module
    docstring); its ``data`` serves only this ``batch``. The latents' dtype is the story's
    (float64 needs ``jax.enable_x64``; otherwise float32)."""
    latents = continuous_sites(story, batch)
    torch_log_joint_of = TorchLogJoint(story, batch, latents)
    dtype = torch_log_joint_of.dtype

    def mapped(arrays, direction):
        with torch.no_grad():
            return {
                s: direction(latents[s].transform)(torch.as_tensor(np.array(v))).numpy()
                for s, v in arrays.items()
            }

    def shapes(z, index):
        grads = {s: jax.ShapeDtypeStruct(np.shape(v), dtype) for s, v in z.items()}
        return jax.ShapeDtypeStruct(np.shape(index), dtype), grads

    # vmapped, the callbacks get every lane at once: broadcast_all gives z and index the same lanes
    @jax.custom_vjp
    def log_joint(z, index):  # z: {site: [..., *event]} in the twin's dtype
        value = torch_log_joint_of.value
        return jax.pure_callback(value, shapes(z, index)[0], z, index, vmap_method="broadcast_all")

    def forward(z, index):
        value_and_grad = torch_log_joint_of.value_and_grad
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
        return {"index": jnp.arange(batch.size)}

    def twin_log_joint(params, z, datum):
        return log_joint({s: jnp.asarray(z[s], dtype) for s in latents}, datum["index"])

    return Twin(
        tuple(latents),
        {},
        twin_log_joint,
        data,
        dtype,
        UNOPTIMIZED,
        to_support=lambda draws: mapped(draws, lambda t: t),
        from_support=lambda values: mapped(values, lambda t: t.inv),
    )
