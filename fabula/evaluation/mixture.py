r"""Mode-collapse diagnostics of a mixture story (:class:`~fabula.models.GMVAE`) under its guide.

For each latent pair :math:`m`, with :math:`q(c\mid x) = \mathrm{Cat}(\rho(x))`,
:math:`q(z\mid x) = \mathcal N(\mu(x), \sigma(x)^2)` and components
:math:`p(z \mid c = k) = \mathcal N(\mu_k, \sigma_k^2)`, :math:`p(c) = \pi`, averaged over data:

* ``kl_c``: :math:`E_x\, KL(q(c\mid x) \,\|\, \pi)`;
* ``kl_z``: :math:`E_x \sum_k \rho_k(x)\, KL(q(z\mid x) \,\|\, p(z\mid c=k))`, the z-term of the
  mixture ELBO with c summed out;
* ``vm``: the variance of the component means, :math:`\sum_k \pi_k \|\mu_k - \bar\mu\|^2` with
  :math:`\bar\mu = \sum_k \pi_k \mu_k`: it falls to 0 when the components collapse onto one;
* ``dispersion``: :math:`E_x` of DGMVAE's dispersion under :math:`q(c\mid x)` (:func:`dispersion`),
  the quantity its dispersion term rewards;
* ``mi_c``: :math:`I_q(x; c) = H(E_x \rho(x)) - E_x H(\rho(x))` on the evaluated data;
* ``usage``: :math:`E_x \rho(x)`, and ``used``: its perplexity :math:`\exp H(E_x \rho(x))`, the
  effective number of components in use.

Quantities are summed over pairs (``usage`` and ``used`` are per pair).

References: W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for
Interpretable Text Generation. ICML 2020.
"""

from __future__ import annotations

import torch

from fabula.errors import UsageError
from fabula.models.capabilities import HasComponents
from fabula.nn.mode import evaluation_mode


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of categorical ``probs`` over the last dimension (nats)."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def dispersion(rho: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    r"""Shi et al.'s dispersion of Gaussian components under ``rho [B, M, K]``, per datum (``[B]``):
    the Jensen gap of the log-partition function in natural parameters,

    .. math::
        \sum_m E_{\rho_m}[A(\eta_{m,c})] - A(E_{\rho_m}[\eta_{m,c}]), \qquad
        \eta = (\mu/\sigma^2, -1/(2\sigma^2)), \quad A(\eta) = \mu^2/(2\sigma^2) + \log\sigma,

    summed over the coordinates (``means`` and ``log_scales``: ``[M, K, D]``). It is
    :math:`\mathrm{Var}_\rho[\mu_c]/(2\sigma^2)` for equal scales, is unchanged when means and
    scales are multiplied by a common factor, and is at most the z-term
    :math:`E_\rho KL(q(z\mid x)\,\|\,p(z\mid c))` of the ELBO, so that a weight up to the KL's keeps
    the objective bounded."""
    precision = (-2 * log_scales).exp()  # lambda = 1 / sigma^2
    log_partition = 0.5 * means**2 * precision + log_scales  # A(eta_c): [M, K, D]
    mixed_precision = torch.einsum("bmk,mkd->bmd", rho, precision)
    mixed_natural = torch.einsum("bmk,mkd->bmd", rho, means * precision)
    mixed = 0.5 * mixed_natural**2 / mixed_precision - 0.5 * mixed_precision.log()
    return (torch.einsum("bmk,mkd->bmd", rho, log_partition) - mixed).sum((-1, -2))


@torch.no_grad()
def mixture_diagnostics(inference, data, batch_size: int = 256) -> dict:
    """The diagnostics above for ``inference`` (its λ: guide, refinement, ...) on ``data``."""
    story = inference.story
    if not isinstance(story, HasComponents):
        raise UsageError(f"{type(story).__name__} is not a mixture story")
    means, scales = story.component_means, story.component_log_scales.exp()  # [M, K, D]
    log_prior = story.mixture_logits.log_softmax(-1)  # [K]
    prior = log_prior.exp()
    kl_c = kl_z = spread = 0.0
    rho_sum, entropy_sum = 0.0, 0.0
    with evaluation_mode(story, inference.guide):
        for batch in data.batches(batch_size, device=story.device):
            params = inference.local_params(batch)
            rho = params["c_logits"].softmax(-1)  # [B, M, K]
            loc, scale = params["loc"], params["log_scale"].exp()  # [B, M, D]
            kl_c += (rho * (rho.clamp_min(1e-30).log() - log_prior)).sum()
            # KL(N(loc, scale) || N(mu_k, sigma_k)) for every k: [B, M, K]
            ratio = scale[:, :, None] / scales
            kl = 0.5 * (ratio**2 + ((loc[:, :, None] - means) / scales) ** 2 - 1) - ratio.log()
            kl_z += (rho * kl.sum(-1)).sum()
            spread += dispersion(rho, means, story.component_log_scales).sum()
            rho_sum = rho_sum + rho.sum(0)
            entropy_sum = entropy_sum + entropy(rho).sum(0)
    n = len(data)
    usage = rho_sum / n  # [M, K]
    center = torch.einsum("k,mkd->md", prior, means)
    vm = (prior[:, None] * (means - center[:, None]) ** 2).sum((-1, -2)).sum()
    return {
        "kl_c": float(kl_c) / n,
        "kl_z": float(kl_z) / n,
        "vm": float(vm),
        "dispersion": float(spread) / n,
        "mi_c": float((entropy(usage) - entropy_sum / n).sum()),
        "usage": usage.tolist(),
        "used": entropy(usage).exp().tolist(),
    }
