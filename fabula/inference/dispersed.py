r"""DGMVAE's training objective: the mixture ELBO with a dispersion and a mutual-information term.

.. math::
    -\mathrm{ELBO}_{\beta_t} \;-\; \beta_t \beta' \sum_m E_x\, D_m(x) \;-\; \gamma \sum_m I_q(x; c_m)

with :math:`D_m(x) = E_{q(c_m\mid x)}[A(\eta_{m,c})] - A(E_{q(c_m\mid x)}[\eta_{m,c}])` the
dispersion of the components' natural parameters (:func:`fabula.evaluation.mixture.dispersion`).
The ELBO's z-term is :math:`E_q KL(q(z\mid x) \| p(z\mid c)) = KL(q(z\mid x) \| p_{\bar\eta}) + D(x)`:
it penalises the dispersion, which pulls the component means together (mode collapse), and the
dispersion term gives back a share :math:`\beta' \le 1` of it. It is weighted by the KL-annealing
weight :math:`\beta_t` too (the scale of the latent sites in the trace), so that it never
outweighs the penalty it offsets. :math:`I_q(x;c) = H(E_x q(c\mid x)) - E_x H(q(c\mid x))` is
estimated on the batch. With :math:`\beta' = \gamma = 0` this is ``TraceEnum_ELBO``.

Both terms are read off the traces the ELBO itself makes: :math:`q(c_m\mid x)` from the guide's
enumerated site, the components :math:`\mathcal N(\mu_{m,k}, \sigma_{m,k}^2)` from the prior of
the one continuous site whose distribution varies along :math:`c_m`'s enumeration dimension.
Components must be global (the same for every datum), as in a Gaussian-mixture prior.

References: W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for
Interpretable Text Generation. ICML 2020.
"""

from __future__ import annotations

import torch
from pyro.distributions import Independent, Normal
from pyro.infer import ELBO, TraceEnum_ELBO

from fabula.errors import SettingsError
from fabula.evaluation.mixture import dispersion, entropy
from fabula.traces import sample_sites


class DispersedELBO(TraceEnum_ELBO):
    """``TraceEnum_ELBO`` minus ``dispersion`` (:math:`\\beta'`) times the annealed dispersion and
    ``mutual_information`` (:math:`\\gamma`) times :math:`I_q(x; c)`, per datum as above."""

    def __init__(self, dispersion: float = 0.0, mutual_information: float = 0.0, max_plate_nesting: int = 1):
        if not 0 <= dispersion <= 1:
            raise SettingsError(
                f"the dispersion weight must lie in [0, 1] for a bounded objective, got {dispersion}"
            )
        super().__init__(max_plate_nesting=max_plate_nesting)
        self.dispersion, self.mutual_information = dispersion, mutual_information
        self._traces = None

    @property
    def bound(self) -> ELBO:
        """The mixture ELBO itself, for refinement and evaluation."""
        return TraceEnum_ELBO(max_plate_nesting=self.max_plate_nesting)

    def _get_trace(self, model, guide, args, kwargs):
        self._traces = super()._get_trace(model, guide, args, kwargs)
        return self._traces

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if not (self.dispersion or self.mutual_information):
            return loss
        spread, mi, beta, size = _mixture_terms(*self._traces)
        return loss - size * (beta * self.dispersion * spread + self.mutual_information * mi)


def _mixture_terms(model_trace, guide_trace):
    """``(E_x D(x), I_q(x; c), beta, B)`` summed over the mixture pairs of the traces."""
    latents = [s for s in sample_sites(model_trace) if not s["is_observed"]]
    spread = mi = 0.0
    beta, size = 1.0, None
    for c in sample_sites(guide_trace):
        dim = c["infer"].get("_enumerate_dim")
        if dim is None:
            continue
        probs = c["fn"].probs  # [B, K]
        size, k = probs.shape[0], probs.shape[-1]
        z = _component_site(latents, dim, k, c["name"])
        normal = z["fn"]
        while isinstance(normal, Independent):
            normal = normal.base_dist
        event = z["fn"].event_dim
        means = _per_component(normal.loc, dim - event, k)  # [K, D]
        log_scales = _per_component(normal.scale, dim - event, k).log()
        spread = spread + dispersion(probs[:, None], means[None], log_scales[None]).mean()
        mi = mi + entropy(probs.mean(0)) - entropy(probs).mean(0)
        beta = z["scale"]
    if size is None:
        raise SettingsError("the dispersion objective needs a story with enumerated discrete sites")
    return spread, mi, beta, size


def _component_site(latents, dim: int, k: int, name: str):
    """The continuous site whose prior varies along enumeration dimension ``dim`` (of size ``k``)."""
    for site in latents:
        fn = site["fn"]
        shape = fn.batch_shape
        if fn.support.is_discrete or len(shape) < -dim or shape[dim] != k:
            continue
        base = fn
        while isinstance(base, Independent):
            base = base.base_dist
        if not isinstance(base, Normal):
            raise SettingsError(f"the components of {name!r} (site {site['name']!r}) are not Gaussian")
        return site
    raise SettingsError(f"no continuous site has components indexed by {name!r}")


def _per_component(t: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """``[K, D]``: ``t``'s values along ``dim`` (the first of every other batch dimension)."""
    t = t.movedim(dim, 0)
    return t.reshape(k, -1, t.shape[-1])[:, 0]
