"""DGMVAE's training setup: the mixture ELBO with a dispersion and a mutual-information term."""

from __future__ import annotations

import torch
from pyro.infer import TraceEnum_ELBO

from fabula.evaluation.mixture import dispersion, entropy
from fabula.inference.amortized import Amortized


class Dispersed(Amortized):
    r"""Amortized VI of a :class:`~fabula.models.GMVAE` with its discrete components summed out
    exactly (``TraceEnum_ELBO``), minimising per datum

    .. math::
        -\mathrm{ELBO}_{\beta_t} \;-\; \beta_t \beta' \sum_m E_x\, D_m(x)
        \;-\; \gamma \sum_m I_q(x; c_m)

    with :math:`D_m(x) = E_{q(c_m\mid x)}[A(\eta_{m,c})] - A(E_{q(c_m\mid x)}[\eta_{m,c}])` the dispersion of
    the components' natural parameters (:func:`fabula.evaluation.mixture.dispersion`). The ELBO's
    z-term is :math:`E_q KL(q(z\mid x) \| p(z\mid c)) = KL(q(z\mid x) \| p_{\bar\eta}) + D(x)`: it
    penalises the dispersion, which pulls the component means together (mode collapse), and the
    dispersion term gives back a fraction :math:`\beta' \le 1` of it. The term is weighted by the
    KL-annealing weight :math:`\beta_t` too, so that it never outweighs the penalty it offsets and
    the objective stays bounded below during annealing. The mutual information
    :math:`I_q(x;c) = H(E_x q(c\mid x)) - E_x H(q(c\mid x))` is estimated on the batch.
    With :math:`\beta' = \gamma = 0` this is the GMVAE objective. Both terms belong to the
    inference setup; the story is unchanged.

    References: W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for
    Interpretable Text Generation. ICML 2020.
    """

    def __init__(self, story, guide, dispersion: float = 0.0, mutual_information: float = 0.0, **settings):
        if not 0 <= dispersion <= 1:
            raise ValueError(
                f"the dispersion weight must lie in [0, 1] for a bounded objective, got {dispersion}"
            )
        settings.setdefault("elbo", TraceEnum_ELBO(max_plate_nesting=1))
        super().__init__(story, guide, **settings)
        self.dispersion, self.mutual_information = dispersion, mutual_information

    def regularizer(self, batch, params: dict[str, torch.Tensor]) -> torch.Tensor | float:
        if not (self.dispersion or self.mutual_information):
            return 0.0
        probs = params["c_logits"].softmax(-1)  # [B, M, K]
        spread = dispersion(probs, self.story.component_means, self.story.component_log_scales).mean()
        mi = (entropy(probs.mean(0)) - entropy(probs).mean(0)).sum()
        beta = self.annealing(self.num_steps)
        return -beta * self.dispersion * spread - self.mutual_information * mi
