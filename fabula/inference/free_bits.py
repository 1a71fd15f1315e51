r"""The free-bits ELBO (Kingma et al. 2016).

.. math::
    \mathcal L_\lambda = \sum_b E_q[\log p(x_b\mid z_b)] - B \sum_j \max\big(\lambda,\ \tfrac1B \sum_b KL_{bj}\big)

with :math:`KL_{bj}` the analytic KL of latent coordinate :math:`j` of datum :math:`b`: each
coordinate gets :math:`\lambda` nats for free, so the optimiser has no incentive to collapse it
below that. Pyro has no such loss; it is written here on Pyro's traces.

References: D. Kingma et al. Improved Variational Inference with Inverse Autoregressive Flow.
NeurIPS 2016.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO

from fabula.errors import SettingsError
from fabula.inference.mean_field import MeanFieldELBO
from fabula.traces import kl_per_dim, sample_sites, site_log_prob


class FreeBitsELBO(MeanFieldELBO):
    """Single-particle ELBO with per-coordinate KL floored at ``free_bits`` nats (batch average),
    on the traces of :class:`~fabula.inference.mean_field.MeanFieldELBO`."""

    def __init__(self, free_bits: float):
        if not free_bits >= 0:
            raise SettingsError(f"free bits must be >= 0, got {free_bits}")
        super().__init__()
        self.free_bits = free_bits

    @property
    def bound(self) -> ELBO:
        """The ELBO without the floor (analytic KL), for refinement and evaluation."""
        return MeanFieldELBO()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        loss = 0.0
        for site in sample_sites(model_trace):
            if site["is_observed"]:
                loss = loss - site_log_prob(site).sum()
                continue
            name = site["name"]
            q = guide_trace.nodes[name]
            try:
                kl = kl_per_dim(q["fn"], site["fn"])
            except NotImplementedError:
                raise SettingsError(f"free bits need an analytic KL for site {name!r}") from None
            batch = kl.shape[0]
            floored = kl.reshape(batch, -1).mean(0).clamp(min=self.free_bits)
            loss = loss + scale_and_mask(floored.sum() * batch, q["scale"])
        for q in sample_sites(guide_trace):  # an auxiliary guide site: -log q(a) in the ELBO
            if q["name"] not in model_trace.nodes:
                loss = loss + site_log_prob(q).sum()
        return loss
