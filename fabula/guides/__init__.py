"""Variational families for the stories."""

from fabula.guides.auto import SupportGuide
from fabula.guides.autoregressive_bernoulli import AutoregressiveBernoulliGuide
from fabula.guides.bernoulli import BernoulliGuide
from fabula.guides.guide import Guide
from fabula.guides.normal import EmptyGuide, GaussianGuide, MixtureGuide, NormalGuide, SentenceGuide
from fabula.guides.simplex import DirichletGuide, LogisticNormalGuide

__all__ = [
    "AutoregressiveBernoulliGuide",
    "BernoulliGuide",
    "DirichletGuide",
    "EmptyGuide",
    "GaussianGuide",
    "Guide",
    "LogisticNormalGuide",
    "MixtureGuide",
    "NormalGuide",
    "SentenceGuide",
    "SupportGuide",
]
