"""Bounds on log-likelihood, perplexity and posterior-collapse metrics for any inference object."""

from fabula.evaluation.bounds import (
    elbo_terms,
    iw_log_likelihood,
    log_weights,
    mutual_information,
    posterior_means,
    run_traces,
    terms_from_traces,
    trace_guide,
)
from fabula.evaluation.metrics import active_units, perplexities
from fabula.evaluation.report import ESTIMATORS, Evaluation, evaluate

__all__ = [
    "ESTIMATORS",
    "Evaluation",
    "active_units",
    "elbo_terms",
    "evaluate",
    "iw_log_likelihood",
    "log_weights",
    "mutual_information",
    "perplexities",
    "posterior_means",
    "run_traces",
    "terms_from_traces",
    "trace_guide",
]
