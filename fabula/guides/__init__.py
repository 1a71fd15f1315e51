"""Variational families for the stories."""

from fabula.guides.auto import SupportGuide
from fabula.guides.bernoulli import BernoulliGuide
from fabula.guides.guide import Guide
from fabula.guides.normal import EmptyGuide, GaussianGuide, MixtureGuide, NormalGuide, SentenceGuide

__all__ = [
    "BernoulliGuide",
    "EmptyGuide",
    "GaussianGuide",
    "Guide",
    "MixtureGuide",
    "NormalGuide",
    "SentenceGuide",
    "SupportGuide",
]
