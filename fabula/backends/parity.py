r"""The parity check of a JAX twin against its torch story, in float64.

:func:`check_twin` draws latents :math:`z_b \sim \mathcal N(0, s^2 I)` for every datum of a
batch and compares the twin's :math:`\log p(x_b, z_b)` and :math:`\nabla_{z_b} \log p(x_b, z_b)`
with the torch story's. The story's value is the sum of its trace's log-probabilities with the
discrete sites the twin sums out enumerated over their supports (by brute force, the product of
the supports: meant for the few components of a mixture),

.. math:: \log p(x_b, z_b) = \log \sum_{c} p(x_b, c, z_b),

and its gradient is torch's. Both run on float64 copies of the story and batch, so a
difference above the tolerance is a mistake in the twin, not rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools

import jax
import numpy as np
import torch

from fabula.backends.callback import latent_sites, torch_log_joint
from fabula.backends.numpyro import twin


def _float64(batch):
    fields = (f.name for f in dataclasses.fields(batch))
    return dataclasses.replace(
        batch, **{n: getattr(batch, n).double() for n in fields if getattr(batch, n).is_floating_point()}
    )


def check_twin(story, batch, builder=None, *, atol: float = 1e-5, scale: float = 1.5, seed: int = 0) -> dict:
    """Compare the twin that ``builder(story, dtype)`` makes (default: the one registered for the
    class of ``story``, :func:`~fabula.backends.numpyro.register_twin`) with ``story`` on ``batch``
    in float64, at latents drawn with standard deviation ``scale`` from ``seed``.

    Raises ``AssertionError`` naming the site and datum where a log joint or gradient differs by
    more than ``atol``, or when the twin's sites are not the story's continuous latents; returns
    the largest absolute differences, ``{"log_joint": ..., "grad[<site>]": ...}``. The story and
    batch are copied, not changed.
    """
    story = copy.deepcopy(story).double().eval()
    batch = _float64(batch)
    sites = latent_sites(story, batch)
    discrete = {
        s: site["fn"].enumerate_support() for s, site in sites.items() if site["fn"].support.is_discrete
    }
    continuous = [s for s in sites if s not in discrete]
    gen = torch.Generator().manual_seed(seed)
    z = {
        s: (scale * torch.randn(sites[s]["value"].shape, generator=gen, dtype=torch.float64)).requires_grad_()
        for s in continuous
    }
    terms = [
        torch_log_joint(story, batch, z | dict(zip(discrete, combo, strict=True)))
        for combo in itertools.product(*discrete.values())
    ]
    expected = torch.logsumexp(torch.stack(terms), 0)
    expected_grads = torch.autograd.grad(expected.sum(), list(z.values()))
    with jax.enable_x64(True):
        jax_twin = twin(story, np.float64) if builder is None else builder(story, np.dtype(np.float64))
        if sorted(jax_twin.sites) != sorted(continuous):
            raise AssertionError(
                f"the twin of {type(story).__name__} samples {jax_twin.sites}; the story's continuous "
                f"latents are {tuple(continuous)}"
            )
        got, grads = jax.vmap(
            jax.value_and_grad(lambda z, datum: jax_twin.log_joint(jax_twin.params, z, datum))
        )({s: v.detach().numpy() for s, v in z.items()}, jax_twin.data(batch))
    pairs = {"log_joint": (got, expected)} | {
        f"grad[{s}]": (grads[s], g) for s, g in zip(z, expected_grads, strict=True)
    }
    errors = {}
    for name, (value, reference) in pairs.items():
        value, reference = np.asarray(value, np.float64), reference.detach().numpy()
        gap = np.abs(value - reference).reshape(batch.size, -1).max(-1)
        worst = int(gap.argmax())
        if not gap[worst] <= atol:  # also catches NaN
            raise AssertionError(
                f"the twin of {type(story).__name__} differs from the story in {name} of datum {worst} "
                f"by {gap[worst]:.3g} > atol {atol:g} (twin {value[worst].ravel()[:4]}, "
                f"story {reference[worst].ravel()[:4]})"
            )
        errors[name] = float(gap.max())
    return errors
