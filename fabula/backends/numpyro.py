r"""NumPyro/JAX twins of the stories' log joints, and NUTS over them for many posteriors at once.

A *twin* restates a trained story's :math:`\log p(x, z)` for one datum in JAX, reading the
story's torch weights as arrays; the torch story stays the one definition of the model, and
:func:`fabula.backends.parity.check_twin` checks that both give the same log joint and gradient
in float64. Discrete latents are summed out in the twin (the GMVAE's :math:`c`), so NUTS moves
only the continuous ones; dropout, a training device, is absent (the twin is the story in
evaluation mode).

Hand-written twins are registered per story class (:func:`register_twin`; fabula registers
NVDM, LSTM-VAE, GMVAE and linear-Gaussian). A story without one is sampled through the
generic twin (:func:`fabula.backends.callback.generic_twin`), which calls the torch story from
JAX: slower per step than a hand twin, with nothing to write.

:func:`nuts` runs NumPyro's NUTS kernel (its functional ``hmc`` interface) for every datum and
chain as one vectorized program: each datum's posterior gets its own chains, its own step-size
and mass-matrix adaptation, and the program is compiled once for all of them, instead of once
per ``numpyro.infer.MCMC.run`` call. It is the kernel of ``MCMC(..., backend="numpyro")``
(:class:`~fabula.inference.kernels.NumPyroNUTS`).

References: D. Phan, N. Pradhan, M. Jankowiak. Composable Effects for Flexible and Accelerated
Probabilistic Programming in NumPyro. 2019.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp
from numpyro.infer.hmc import hmc
from tqdm.auto import tqdm

from fabula.errors import UsageError
from fabula.models import GMVAE, LSTMVAE, NVDM, LinearGaussian
from fabula.models.capabilities import GeneratesSentences
from fabula.nn.output import FullSoftmax


def _array(tensor, dtype) -> jnp.ndarray:
    return jnp.asarray(tensor.detach().cpu().numpy(), dtype=dtype)


def _normal_logpdf(z, loc, scale):
    return jnp.sum(-0.5 * ((z - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi), -1)


@dataclass
class Twin:
    """A story's log joint in JAX: ``log_joint(params, z, datum)`` for one datum (``z``: the dict
    of its continuous latents ``sites``), ``params`` the story's weights as arrays, ``data(batch)``
    the batch as a dict of arrays with the data on the leading axis, and ``dtype`` the float
    dtype of the latents. ``compiler_options`` go to XLA when :func:`nuts` compiles (a twin
    whose cost is outside XLA compiles faster unoptimized). A twin whose ``z`` is an
    unconstrained form of the story's latents maps ``{site: array}`` between the two with
    ``to_support`` and ``from_support`` (``None``: ``z`` is the latents themselves)."""

    sites: tuple[str, ...]
    params: dict
    log_joint: Callable
    data: Callable
    dtype: np.dtype
    compiler_options: dict | None = None
    to_support: Callable | None = None
    from_support: Callable | None = None


def _nvdm(story: NVDM, dtype) -> Twin:
    params = {
        "w": _array(story.decoder.weight, dtype),
        "b": _array(story.decoder.bias, dtype),
        "prior_loc": _array(story.prior_loc, dtype),
        "prior_scale": _array(story.prior_scale, dtype),
    }

    def log_joint(p, z, datum):
        z = z["z"]
        logits = p["w"] @ z + p["b"]
        loglik = datum["counts"] @ jax.nn.log_softmax(logits)
        return _normal_logpdf(z, p["prior_loc"], p["prior_scale"]) + loglik

    def data(batch):
        return {"counts": _array(batch.counts, dtype)}

    return Twin(("z",), params, log_joint, data, dtype)


def _linear_gaussian(story: LinearGaussian, dtype) -> Twin:
    params = {
        "w": _array(story.weight, dtype),
        "b": _array(story.bias, dtype),
        "noise": _array(story.log_noise.exp(), dtype),
        "prior_loc": _array(story.prior_loc, dtype),
        "prior_scale": _array(story.prior_scale, dtype),
    }

    def log_joint(p, z, datum):
        z = z["z"]
        prior = _normal_logpdf(z, p["prior_loc"], p["prior_scale"])
        return prior + _normal_logpdf(datum["x"], p["w"] @ z + p["b"], p["noise"])

    return Twin(("z",), params, log_joint, lambda batch: {"x": _array(batch.x, dtype)}, dtype)


def _decoder_params(decoder, dtype) -> dict:
    if type(decoder.out) is not FullSoftmax:
        raise UsageError(
            f"the numpyro backend reads the full softmax output layer only, not {type(decoder.out).__name__}"
        )
    lstm = decoder.lstm
    return {
        "embed": _array(decoder.embed.weight, dtype),
        "w_ih": _array(lstm.weight_ih_l0, dtype),
        "w_hh": _array(lstm.weight_hh_l0, dtype),
        "b": _array(lstm.bias_ih_l0 + lstm.bias_hh_l0, dtype),
        "w_out": _array(decoder.out.weight, dtype),
        "b_out": _array(decoder.out.bias, dtype),
        "w_init": _array(decoder.init_state.weight, dtype),
        "b_init": _array(decoder.init_state.bias, dtype),
    }


def _decoder_loglik(p, z, datum, z_every_step: bool):
    r""":math:`\sum_t m_t \log p(w_t \mid w_{<t}, z)` of one sentence under
    :class:`~fabula.nn.LSTMDecoder` (torch's gate order i, f, g, o)."""
    h, c = jnp.split(p["w_init"] @ z + p["b_init"], 2)
    x = p["embed"][datum["inputs"]]
    if z_every_step:
        x = jnp.concatenate([x, jnp.broadcast_to(z, (x.shape[0], z.shape[0]))], -1)
    gates_in = x @ p["w_ih"].T + p["b"]

    def cell(state, g_in):
        h, c = state
        i, f, g, o = jnp.split(g_in + p["w_hh"] @ h, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    _, hs = lax.scan(cell, (jnp.tanh(h), c), gates_in)
    logp = jax.nn.log_softmax(hs @ p["w_out"].T + p["b_out"])
    token = jnp.take_along_axis(logp, datum["targets"][:, None], -1)[:, 0]
    return jnp.sum(jnp.where(datum["mask"], token, 0.0))


def _sentence_data(batch) -> dict:
    return {
        "inputs": jnp.asarray(batch.decoder_inputs.cpu().numpy()),
        "targets": jnp.asarray(batch.targets.cpu().numpy()),
        "mask": jnp.asarray(batch.mask.cpu().numpy()),
    }


def _lstm_vae(story: LSTMVAE, dtype) -> Twin:
    params = {
        **_decoder_params(story.decoder, dtype),
        "prior_loc": _array(story.prior_loc, dtype),
        "prior_scale": _array(story.prior_scale, dtype),
    }
    every = story.decoder.z_every_step

    def log_joint(p, z, datum):
        z = z["z"]
        return _normal_logpdf(z, p["prior_loc"], p["prior_scale"]) + _decoder_loglik(p, z, datum, every)

    return Twin(("z",), params, log_joint, _sentence_data, dtype)


def _gmvae(story: GMVAE, dtype) -> Twin:
    params = {
        **_decoder_params(story.decoder, dtype),
        "means": _array(story.component_means, dtype),
        "scales": _array(story.component_log_scales.exp(), dtype),
        "log_weights": _array(story.mixture_logits.log_softmax(-1), dtype),
    }
    sites = tuple(f"z{m}" for m in range(story.num_pairs))
    every = story.decoder.z_every_step

    def log_joint(p, z, datum):
        # log p(z_m) = logsumexp_k [log pi_k + log N(z_m; mu_mk, sigma_mk)]: c_m summed out
        prior = sum(
            logsumexp(p["log_weights"] + _normal_logpdf(z[s], p["means"][m], p["scales"][m]))
            for m, s in enumerate(sites)
        )
        return prior + _decoder_loglik(p, jnp.concatenate([z[s] for s in sites]), datum, every)

    return Twin(sites, params, log_joint, _sentence_data, dtype)


_BUILDERS: dict[type, Callable] = {}


def register_twin(story_class: type, builder: Callable) -> Callable:
    r"""Register ``builder(story, dtype) -> Twin``, a hand-written JAX twin of the stories of
    ``story_class`` (that class exactly: a subclass may change the model, so it is registered on
    its own), for ``MCMC(..., backend="numpyro")``; a later registration replaces an earlier
    one. Returns ``builder``. Check it with :func:`fabula.backends.parity.check_twin`.

    A bag-of-words story :math:`z \sim \mathcal N(0, I)`,
    :math:`x \mid z \sim \mathrm{Mult}(N, \mathrm{softmax}(W z))` with weight ``W`` (scored as
    its token sequence, as :class:`~fabula.distributions.BagOfWordsMultinomial` does)::

        def bag_twin(story, dtype):
            params = {"w": jnp.asarray(story.weight.detach().cpu().numpy(), dtype)}

            def log_joint(p, z, datum):
                z = z["z"]
                prior = jnp.sum(jax.scipy.stats.norm.logpdf(z))
                return prior + datum["counts"] @ jax.nn.log_softmax(p["w"] @ z)

            def data(batch):
                return {"counts": jnp.asarray(batch.counts.cpu().numpy(), dtype)}

            return Twin(("z",), params, log_joint, data, dtype)

        register_twin(BagStory, bag_twin)
        check_twin(story, batch)  # float64 log joint and gradient against the torch story
    """
    if not isinstance(story_class, type):
        raise TypeError(f"register_twin takes a story class, got {story_class!r}")
    _BUILDERS[story_class] = builder
    return builder


def has_twin(story) -> bool:
    """Whether a hand-written twin is registered for the class of ``story`` and reads it (a
    sentence story's twin reads the full softmax output layer only)."""
    full = not isinstance(story, GeneratesSentences) or type(story.decoder.out) is FullSoftmax
    return type(story) in _BUILDERS and full


def twin(story, dtype=None) -> Twin:
    """The registered twin of ``story`` with its current weights (``dtype``: that of the
    weights, float32 unless JAX has float64 enabled)."""
    make = _BUILDERS.get(type(story))
    if make is None:
        raise TypeError(
            f"no hand-written NumPyro twin of {type(story).__name__} is registered (twins are registered "
            f"for {', '.join(t.__name__ for t in _BUILDERS)}); register one with "
            "fabula.backends.numpyro.register_twin, or sample through the generic twin "
            "(fabula.backends.callback.generic_twin)"
        )
    dtype = dtype or np.dtype(str(next(story.parameters()).dtype).removeprefix("torch."))
    return make(story, jax.dtypes.canonicalize_dtype(dtype))


register_twin(NVDM, _nvdm)
register_twin(LSTMVAE, _lstm_vae)
register_twin(GMVAE, _gmvae)
register_twin(LinearGaussian, _linear_gaussian)


@dataclass
class NutsResult:
    """Draws ``{site: [chain, draw, B, ...]}``, per-draw statistics ``{name: [chain, draw, B]}``,
    and the seconds spent compiling and sampling (warmup included)."""

    samples: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    compile_seconds: float
    sample_seconds: float


def nuts(
    twin: Twin,
    batch,
    init: dict[str, np.ndarray],
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 1,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    seed: int = 0,
    progress: bool = True,
    chunk: int = 50,
) -> NutsResult:
    """NUTS on :math:`p(z_b \\mid x_b)` for every datum ``b`` of ``batch``, ``num_chains`` chains
    each, all vectorized; chains start at ``init`` (``{site: [B, ...]}``, on the latents'
    supports, as the draws returned are). Iterations run in
    compiled chunks of ``chunk`` so that a progress bar can follow them."""
    data = twin.data(batch)
    size = next(iter(data.values())).shape[0]
    dtype = twin.dtype
    if twin.from_support is not None:
        init = twin.from_support(init)
    init = {s: jnp.broadcast_to(jnp.asarray(v, dtype), (num_chains, *np.shape(v))) for s, v in init.items()}

    def potential_gen(params, datum):
        return lambda z: -twin.log_joint(params, z, datum)

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

    def start(z0, key, datum):
        return init_kernel(
            z0,
            warmup,
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            model_args=(twin.params, datum),
            rng_key=key,
        )

    def advance(state, datum):
        def body(state, _):
            state = sample_kernel(state, model_args=(twin.params, datum))
            stats = {
                "energy": state.energy,
                "diverging": state.diverging,
                "step_size": state.adapt_state.step_size,
                "n_steps": state.num_steps,
                "accept_prob": state.accept_prob,
            }
            return state, (state.z, stats)

        return lax.scan(body, state, None, length=chunk)

    start_all = jax.vmap(jax.vmap(start, (0, 0, 0)), (0, 0, None))
    advance_all = jax.vmap(jax.vmap(advance, (0, 0)), (0, None))
    keys = jax.random.split(jax.random.PRNGKey(seed), num_chains * size).reshape(num_chains, size, -1)
    clock = time.perf_counter()
    start_c = jax.jit(start_all).lower(init, keys, data).compile(twin.compiler_options)
    state = jax.eval_shape(start_all, init, keys, data)
    advance_c = jax.jit(advance_all).lower(state, data).compile(twin.compiler_options)
    compile_seconds = time.perf_counter() - clock

    total = warmup + num_samples
    draws, stats = [], []
    clock = time.perf_counter()
    state = start_c(init, keys, data)
    with tqdm(total=total, desc="NUTS (numpyro)", disable=not progress, leave=False) as bar:
        for _ in range(-(-total // chunk)):
            state, (z, s) = advance_c(state, data)
            draws.append(z)
            stats.append(s)
            bar.update(chunk)
    jax.block_until_ready(state)
    sample_seconds = time.perf_counter() - clock

    # scan stacks iterations on axis 2 ([chain, B, iteration, ...]): make it [chain, iteration, B, ...]
    def collect(parts):
        whole = np.concatenate([np.asarray(p) for p in parts], axis=2)[:, :, warmup:total]
        return np.moveaxis(whole, 2, 1)

    samples = {s: collect([d[s] for d in draws]) for s in twin.sites}
    if twin.to_support is not None:
        samples = twin.to_support(samples)
    stats = {k: collect([s[k] for s in stats]) for k in stats[0]}
    stats["tree_depth"] = np.ceil(np.log2(stats["n_steps"] + 1)).astype(np.int64)
    return NutsResult(samples, stats, compile_seconds, sample_seconds)
