r"""The single-particle ELBO with analytic KL, the default objective and bound.

.. math:: \mathcal L = \sum_b \Big( \log p(x_b \mid z_b) - \sum_s KL\big(q(z_{s,b}) \,\|\, p(z_{s,b})\big) \Big),
          \qquad z_b \sim q_{\lambda_b}

It is the estimator of Pyro's ``TraceMeanField_ELBO`` (one particle), computed straight from the
guide's trace and the story replayed on it: no pruned trace copies, no log-densities of latent
sites that the KL replaces. A latent site whose KL torch does not know contributes
:math:`\log q(z) - \log p(z)`, as in Pyro. A guide site that is not reparameterised is refused
(its gradient would need score-function terms), where Pyro refuses it only with validation on.

References: D. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO
from torch.distributions import kl_divergence

from fabula.errors import UsageError
from fabula.traces import sample_sites, trace_pair


class MeanFieldELBO(ELBO):
    """One-particle ELBO with analytic KL where torch has it (reparameterised guides)."""

    def __init__(self):
        super().__init__(num_particles=1)

    def _get_trace(self, model, guide, args, kwargs):
        return trace_pair(model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        elbo = 0.0
        for site in sample_sites(model_trace):
            if site["is_observed"]:
                elbo = (
                    elbo
                    + scale_and_mask(site["fn"].log_prob(site["value"]), site["scale"], site["mask"]).sum()
                )
                continue
            q = guide_trace.nodes.get(site["name"])
            if q is None:
                raise UsageError(f"the story's latent site {site['name']!r} has no site in the guide")
            if not q["fn"].has_rsample:
                raise UsageError(
                    f"the mean-field ELBO differentiates through reparameterised draws and guide site "
                    f"{site['name']!r} is not reparameterised; train with Trace_ELBO (score-function "
                    "gradients) or TraceEnum_ELBO (the site summed out)"
                )
            try:
                kl = kl_divergence(q["fn"], site["fn"])
            except NotImplementedError:
                kl = q["fn"].log_prob(q["value"]) - site["fn"].log_prob(site["value"])
            elbo = elbo - scale_and_mask(kl, q["scale"], q["mask"]).sum()
        return -elbo

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss)
