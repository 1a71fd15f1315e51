"""Distributions written once, each scored by a single fused op, and used by every story."""

from fabula.distributions.autoregressive_bag import AutoregressiveBagOfWords
from fabula.distributions.autoregressive_bernoulli import AutoregressiveBernoulli
from fabula.distributions.bag_of_words import BagOfWordsMultinomial
from fabula.distributions.kl import kl_bernoulli_bernoulli
from fabula.distributions.sequence import AutoregressiveSequence, MaskedSequenceCategorical
from fabula.distributions.topic_mixture import TopicMixtureBagOfWords

__all__ = [
    "AutoregressiveBagOfWords",
    "AutoregressiveBernoulli",
    "AutoregressiveSequence",
    "BagOfWordsMultinomial",
    "MaskedSequenceCategorical",
    "TopicMixtureBagOfWords",
    "kl_bernoulli_bernoulli",
]
