"""Likelihoods written once, each a single fused op, and used by every story."""

from fabula.distributions.bag_of_words import BagOfWordsMultinomial

__all__ = ["BagOfWordsMultinomial"]
