"""Summaries of per-datum bounds: perplexities and posterior-collapse signals."""

from __future__ import annotations

import torch

from fabula.errors import UsageError


def perplexities(nll: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
    r"""Per-document and corpus perplexity from per-document NLL (nats) and token counts.

    * ``perplexity`` :math:`= \exp\big(\frac1D \sum_d \mathrm{NLL}_d / N_d\big)`, the NVDM
      convention (Miao et al. 2016);
    * ``corpus_perplexity`` :math:`= \exp\big(\sum_d \mathrm{NLL}_d / \sum_d N_d\big)`, the
      language-model convention (Bowman et al. 2016; Kim et al. 2018).
    """
    nll, tokens = nll.double(), tokens.double()
    return {
        "perplexity": float(torch.exp((nll / tokens).mean())),
        "corpus_perplexity": float(torch.exp(nll.sum() / tokens.sum())),
    }


AU_THRESHOLD = 0.01
"""The variance across data above which a latent coordinate counts as active (Burda et al.'s)."""


def active_units(posterior_means: torch.Tensor, threshold: float = AU_THRESHOLD) -> int:
    r"""Latent coordinates whose posterior mean varies across data:
    :math:`\mathrm{Var}_x(E_{q(z\mid x)}[z_k]) > \delta` with :math:`\delta = 0.01`, for a
    Gaussian coordinate's mean and a binary unit's probability alike; categorical sites are left
    out (:func:`~fabula.evaluation.bounds.posterior_means`).

    :param posterior_means: ``[num_data, latent_dim]``.

    References: Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """
    if posterior_means.shape[0] < 2:
        raise UsageError("active units need the posterior means of at least two data")
    if posterior_means.shape[1] == 0:
        return 0
    return int((posterior_means.double().var(0) > threshold).sum())
