"""Likelihoods written once, each a single fused op, and used by every story."""

from fabula.distributions.bag_of_words import BagOfWordsMultinomial
from fabula.distributions.kl import kl_bernoulli_bernoulli
from fabula.distributions.sequence import AutoregressiveSequence, MaskedSequenceCategorical

__all__ = [
    "AutoregressiveSequence",
    "BagOfWordsMultinomial",
    "MaskedSequenceCategorical",
    "kl_bernoulli_bernoulli",
]
