r"""A posterior's draws compared with reference draws (NUTS) of the same :math:`p(z \mid x)`.

Per datum, over the coordinates of a continuous site, with :math:`m, v` the mean and variance of
the draws and :math:`m^*, v^*` those of the reference:

* ``mean_error``: :math:`\frac1K \sum_k |m_k - m^*_k| / \sqrt{v^*_k}`, the error of the mean
  in reference standard deviations;
* ``log_var_ratio``: :math:`\frac1K \sum_k |\log(v_k / v^*_k)|`, the error of the spread
  (0 when equal; :math:`\log 2` when off by a factor of two either way);
* ``kl``: :math:`KL(\mathcal N(m, v) \,\|\, \mathcal N(m^*, v^*))` of the diagonal Gaussians
  matched to both sets of draws, in nats: an estimate of :math:`KL(q \,\|\, p(z\mid x))` that
  is exact when both are Gaussian with diagonal covariance.

References: Y. Yao, A. Vehtari, D. Simpson, A. Gelman. Yes, but Did It Work?: Evaluating
Variational Inference. ICML 2018 (posterior error against a long NUTS run).
"""

from __future__ import annotations

import torch


def posterior_error(draws: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{mean_error, log_var_ratio, kl}`` per datum (``[B]``) for ``draws [S, B, K]`` against
    ``reference [S', B, K]`` (chains pooled)."""
    if draws.shape[1:] != reference.shape[1:]:
        raise ValueError(
            f"draws {tuple(draws.shape)} and reference {tuple(reference.shape)} differ after dim 0"
        )
    draws, reference = draws.double(), reference.double()
    m, v = draws.mean(0), draws.var(0)
    m_ref, v_ref = reference.mean(0), reference.var(0)
    kl = 0.5 * (v / v_ref + (m - m_ref) ** 2 / v_ref - 1 + (v_ref / v).log()).sum(-1)
    return {
        "mean_error": ((m - m_ref).abs() / v_ref.sqrt()).mean(-1),
        "log_var_ratio": (v / v_ref).log().abs().mean(-1),
        "kl": kl,
    }
