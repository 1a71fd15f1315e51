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
        -\mathrm{ELBO} \;-\; \beta' \sum_m E_x \mathrm{Var}_{q(c_m\mid x)}[\mu_{m, c_m}]
        \;-\; \gamma \sum_m I_q(x; c_m)

    The dispersion term keeps the component means apart (against mode collapse); the mutual
    information :math:`I_q(x;c) = H(E_x q(c\mid x)) - E_x H(q(c\mid x))` is estimated on the batch.
    With :math:`\beta' = \gamma = 0` this is the GMVAE objective. Both terms belong to the
    inference setup; the story is unchanged.

    References: W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for
    Interpretable Text Generation. ICML 2020.
    """

    def __init__(self, story, guide, dispersion: float = 0.0, mutual_information: float = 0.0, **settings):
        settings.setdefault("elbo", TraceEnum_ELBO(max_plate_nesting=1))
        super().__init__(story, guide, **settings)
        self.dispersion, self.mutual_information = dispersion, mutual_information

    def regularizer(self, batch, params: dict[str, torch.Tensor]) -> torch.Tensor | float:
        if not (self.dispersion or self.mutual_information):
            return 0.0
        probs = params["c_logits"].softmax(-1)  # [B, M, K]
        variance = dispersion(probs, self.story.component_means).mean()
        mi = (entropy(probs.mean(0)) - entropy(probs).mean(0)).sum()
        return -self.dispersion * variance - self.mutual_information * mi
