"""Estimators and bounds of log-likelihood, perplexity and posterior-collapse metrics for any inference object,
and text (BLEU), clustering (homogeneity, V-measure) and topic (NPMI, diversity) metrics."""

from fabula.evaluation.bleu import corpus_bleu, reconstruction_bleu, sample_bleu
from fabula.evaluation.bounds import (
    elbo_terms,
    iw_log_likelihood,
    log_weights,
    mutual_information,
    posterior_means,
    terms_from_traces,
)
from fabula.evaluation.clustering import chance_homogeneity, completeness, homogeneity, v_measure
from fabula.evaluation.estimators import (
    AIS,
    ELBO,
    ESTIMATORS,
    Estimator,
    Exact,
    ImportanceFromDraws,
    ImportanceWeighted,
    LeftToRight,
    TemperedAIS,
    default_estimator,
    parse_estimator,
)
from fabula.evaluation.metrics import active_units, perplexities
from fabula.evaluation.mixture import mixture_diagnostics
from fabula.evaluation.report import Evaluation, evaluate
from fabula.evaluation.topic_quality import npmi, topic_diversity

__all__ = [
    "AIS",
    "ELBO",
    "ESTIMATORS",
    "Estimator",
    "Evaluation",
    "Exact",
    "LeftToRight",
    "ImportanceFromDraws",
    "ImportanceWeighted",
    "TemperedAIS",
    "default_estimator",
    "parse_estimator",
    "active_units",
    "chance_homogeneity",
    "completeness",
    "corpus_bleu",
    "elbo_terms",
    "evaluate",
    "homogeneity",
    "iw_log_likelihood",
    "log_weights",
    "mixture_diagnostics",
    "mutual_information",
    "npmi",
    "perplexities",
    "posterior_means",
    "reconstruction_bleu",
    "sample_bleu",
    "terms_from_traces",
    "topic_diversity",
    "v_measure",
]
