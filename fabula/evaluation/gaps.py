r"""The inference gaps of Cremer et al. (2018), per datum and averaged.

.. math::
    \underbrace{\log p(x) - \mathrm{ELBO}(\lambda^*)}_{\text{approximation gap}} \;+\;
    \underbrace{\mathrm{ELBO}(\lambda^*) - \mathrm{ELBO}(\mathrm{enc}(x))}_{\text{amortization gap}}
    = \log p(x) - \mathrm{ELBO}(\mathrm{enc}(x))

:math:`\lambda^*` is the per-datum optimum, approximated by refining :math:`\mathrm{enc}(x)`
(an inference object such as :class:`~fabula.inference.Refined`); :math:`\log p(x)` by the
importance-weighted bound with many samples drawn from the refined :math:`q_{\lambda^*}`.

References: C. Cremer, X. Li, D. Duvenaud. Inference Suboptimality in Variational Autoencoders.
ICML 2018.
"""

from __future__ import annotations

from fabula.evaluation.estimators import ELBO, ImportanceWeighted
from fabula.evaluation.report import evaluate


def inference_gaps(
    inference, refined, data, iw_samples: int = 500, elbo_samples: int = 20, batch_size: int = 64
):
    """Approximation and amortization gaps (nats per datum) of ``inference`` on ``data``;
    ``refined`` gives λ* (the same story and guide, refined per datum)."""
    elbo_amortized = -evaluate(inference, data, ELBO(elbo_samples), batch_size).nll
    elbo_optimal = -evaluate(refined, data, ELBO(elbo_samples), batch_size).nll
    log_likelihood = -evaluate(refined, data, ImportanceWeighted(iw_samples), batch_size).nll
    return {
        "log_likelihood": float(log_likelihood.double().mean()),
        "elbo_amortized": float(elbo_amortized.double().mean()),
        "elbo_optimal": float(elbo_optimal.double().mean()),
        "approximation_gap": float((log_likelihood - elbo_optimal).double().mean()),
        "amortization_gap": float((elbo_optimal - elbo_amortized).double().mean()),
        "iw_samples": iw_samples,
        "elbo_samples": elbo_samples,
    }
