r"""Analytic KL divergences that torch gets wrong for fabula's traces.

``torch.distributions`` computes :math:`KL(\mathrm{Bernoulli} \,\|\, \mathrm{Bernoulli})` with
masks of each argument's own shape, so it fails when the two batch shapes only broadcast. They
do in every bound: a guide's site carries the particle dimension (``[S, B, F]``) and the story's
prior, replayed on the guide's draws, does not (``[B, F]``). Registered for Pyro's ``Bernoulli``
(more specific than torch's, so it is the one dispatched), in logits:

.. math:: KL(\mathrm{Bern}(\sigma(a)) \,\|\, \mathrm{Bern}(\sigma(b)))
          = \sigma(a)\,(a - b) + \mathrm{softplus}(b) - \mathrm{softplus}(a)
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch.distributions import register_kl
from torch.nn.functional import softplus


@register_kl(dist.Bernoulli, dist.Bernoulli)
def kl_bernoulli_bernoulli(p: dist.Bernoulli, q: dist.Bernoulli) -> torch.Tensor:
    r""":math:`KL(p \,\|\, q)` of two Bernoulli distributions from their logits, elementwise over
    their broadcast batch shapes (the module's formula)."""
    a, b = p.logits, q.logits
    return torch.sigmoid(a) * (a - b) + softplus(b) - softplus(a)
