"""Variational families for the stories."""

from fabula.guides.guide import Guide
from fabula.guides.normal import EmptyGuide, GaussianGuide, MixtureGuide, NormalGuide, SentenceGuide

__all__ = ["EmptyGuide", "GaussianGuide", "Guide", "MixtureGuide", "NormalGuide", "SentenceGuide"]
