r"""The single-particle ELBO with analytic KL, the default objective and bound.

.. math:: \mathcal L = \sum_b \Big( \log p(x_b \mid z_b) - \sum_s KL\big(q(z_{s,b}) \,\|\, p(z_{s,b})\big)
          - \sum_a \log q(a_b) \Big), \qquad z_b, a_b \sim q_{\lambda_b}

It is the estimator of Pyro's ``TraceMeanField_ELBO`` (one particle), computed straight from the
guide's trace and the story replayed on it (:func:`~fabula.traces.elbo_parts`): no pruned trace
copies, no log-densities of latent sites that the KL replaces. A latent site whose KL torch does
not know contributes :math:`\log q(z) - \log p(z)`, as in Pyro; so does one whose analytic KL the
guide's order of draws would bias (Pyro's estimator keeps the biased term and warns under
validation: fabula keeps the number right and warns once); a guide site the story does not have
(an auxiliary variable :math:`a`) contributes :math:`-\log q(a)`. A guide site that is not
reparameterised is refused (its gradient would need score-function terms), where Pyro refuses it
only with validation on.

References: D. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from __future__ import annotations

import torch
from pyro.infer import ELBO

from fabula.errors import UsageError
from fabula.traces import elbo_parts, sample_sites, trace_pair


def _sum(term) -> torch.Tensor | float:
    return term.sum() if torch.is_tensor(term) else term


class MeanFieldELBO(ELBO):
    """One-particle ELBO with analytic KL where torch has it (reparameterised guides)."""

    def __init__(self):
        super().__init__(num_particles=1)

    def _get_trace(self, model, guide, args, kwargs):
        return trace_pair(model, guide, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        for q in sample_sites(guide_trace):
            if not q["fn"].has_rsample:
                raise UsageError(
                    f"the mean-field ELBO differentiates through reparameterised draws and guide site "
                    f"{q['name']!r} is not reparameterised; train with Trace_ELBO (score-function "
                    "gradients) or TraceEnum_ELBO (the site summed out)"
                )
        reconstruction, kls = elbo_parts(model_trace, guide_trace)
        return sum((_sum(kl) for kl in kls.values()), 0.0) - _sum(reconstruction)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss)
