r"""The inference gaps of Cremer et al. (2018), per datum and averaged.

.. math::
    \underbrace{\log p(x) - \mathrm{ELBO}(\lambda^*)}_{\text{approximation gap}} \;+\;
    \underbrace{\mathrm{ELBO}(\lambda^*) - \mathrm{ELBO}(\mathrm{enc}(x))}_{\text{amortization gap}}
    = \log p(x) - \mathrm{ELBO}(\mathrm{enc}(x))

:math:`\lambda^*` is the per-datum optimum, approximated by refining :math:`\mathrm{enc}(x)`
(an inference object such as :class:`~fabula.inference.Refined`); :math:`\log p(x)` by the
importance-weighted bound with many samples drawn from the refined :math:`q_{\lambda^*}`.

The amortization gap is not negative for a refinement that converged: a negative one beyond the
Monte Carlo noise is refused (:class:`NotConverged`), not reported.

References: C. Cremer, X. Li, D. Duvenaud. Inference Suboptimality in Variational Autoencoders.
ICML 2018.
"""

from __future__ import annotations

import math
import warnings

from fabula.errors import DivergenceError
from fabula.evaluation.estimators import ELBO, ImportanceWeighted
from fabula.evaluation.report import evaluate
from fabula.inference.refinement import RefinementWarning
from fabula.inference.sources import Refined

#: Standard errors below zero beyond which a negative amortization gap is refused.
TOLERANCE = 3.0


class NotConverged(DivergenceError):
    """The refined ELBO is below the amortized one by more than :data:`TOLERANCE` Monte Carlo
    standard errors: refinement did not converge (its step size ``lr`` is too large).
    ``gap`` and ``se`` are the amortization gap and its standard error, nats per datum."""

    def __init__(
        self, message: str, gap: float | None = None, se: float | None = None, lr: float | None = None
    ):
        super().__init__(message)
        self.gap, self.se, self.lr = gap, se, lr


def _step_size(refined) -> float | None:
    """The step size of ``refined``'s refinement, where its λ source refines."""
    return refined.source.refinement.lr if isinstance(refined.source, Refined) else None


def _raise(warning: RefinementWarning) -> float:
    """By how much a :class:`~fabula.inference.RefinementWarning` says a batch's bound was raised
    (without its figures: by an unknown amount, counted)."""
    if warning.after is None or warning.before is None:
        return math.inf
    return warning.after - warning.before


def inference_gaps(
    inference, refined, data, iw_samples: int = 500, elbo_samples: int = 20, batch_size: int = 64
):
    """Approximation and amortization gaps (nats per datum) of ``inference`` on ``data``;
    ``refined`` gives λ* (the same story and guide, refined per datum).

    The amortized ELBO is the mean of two independent evaluations, whose difference measures the
    Monte Carlo noise of the estimates; ``amortization_gap_se`` is the gap's standard error from
    that noise alone (the refined estimate's noise taken as the amortized one's). A gap below
    ``-TOLERANCE`` standard errors raises :class:`NotConverged` (lower ``Refinement(lr=...)``),
    before the costly importance-weighted bound. The refinement's own warnings
    (:class:`~fabula.inference.RefinementWarning`, one per batch whose bound it raised) are
    folded into one: ``raised_batches`` of the ``refined_batches`` raised it by more than
    ``TOLERANCE`` times the noise of a batch's mean (``se`` scaled by the square root of data per
    batch); smaller raises, such as a collapsed posterior's with nothing to refine, are noise.
    """
    first, second = (
        -evaluate(inference, data, ELBO(elbo_samples), batch_size).nll.double() for _ in range(2)
    )
    elbo_amortized = (first + second) / 2
    # one estimate's variance is E(first - second)^2 / 2; the gap's, (σ²_refined + σ²/2) / n
    se = math.sqrt(0.75 * float((first - second).pow(2).mean()) / len(first))
    lr = _step_size(refined)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RefinementWarning)
        elbo_optimal = -evaluate(refined, data, ELBO(elbo_samples), batch_size).nll.double()
        gap = float((elbo_optimal - elbo_amortized).mean())
        if gap < -TOLERANCE * se:
            raise NotConverged(
                f"refinement did not converge: the refined ELBO is {-gap:.2f} nats per datum below the "
                f"amortized one (standard error {se:.2f}); lower Refinement(lr=...) (now {lr})",
                gap,
                se,
                lr,
            )
        log_likelihood = -evaluate(refined, data, ImportanceWeighted(iw_samples), batch_size).nll.double()
    for w in caught:
        if not issubclass(w.category, RefinementWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    noise = TOLERANCE * se * math.sqrt(len(data) / min(batch_size, len(data)))
    raises = [_raise(w.message) for w in caught if issubclass(w.category, RefinementWarning)]
    raised = [r for r in raises if r > noise]
    refined_batches = 2 * math.ceil(len(data) / batch_size)
    if raised:
        warnings.warn(
            RefinementWarning(
                f"refinement raised the negative ELBO of {len(raised)} of {refined_batches} batches, by up "
                f"to {max(raised):.2f} nats per datum (lr={lr}): the amortization gap is not negative "
                "beyond noise, but λ* falls short of the optimum; lower Refinement(lr=...)",
                lr,
            ),
            stacklevel=2,
        )
    return {
        "log_likelihood": float(log_likelihood.mean()),
        "elbo_amortized": float(elbo_amortized.mean()),
        "elbo_optimal": float(elbo_optimal.mean()),
        "approximation_gap": float((log_likelihood - elbo_optimal).mean()),
        "amortization_gap": gap,
        "amortization_gap_se": se,
        "raised_batches": len(raised),
        "refined_batches": refined_batches,
        "iw_samples": iw_samples,
        "elbo_samples": elbo_samples,
    }
