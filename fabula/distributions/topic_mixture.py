"""Word counts from a mixture of topics, scored at the words a document holds."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from fabula.distributions.bag_of_words import BagOfWordsMultinomial


class TopicMixtureBagOfWords(TorchDistribution):
    r"""A document of :math:`N` tokens drawn i.i.d. from the mixture :math:`\theta^\top \beta` of
    topics :math:`\beta` (``[K, V]``, rows on the simplex) with weights :math:`\theta`
    (``[..., K]``), observed as its word counts :math:`x`:

    .. math:: \log p(w_{1:N}) = \sum_{v : x_v > 0} x_v \log \sum_k \theta_k \beta_{kv},

    the token sequence's log-probability, as :class:`BagOfWordsMultinomial`'s (which it equals for
    logits :math:`\log \theta^\top \beta`), computed at the words the document holds only: a
    document of 2,000-word 20 Newsgroups holds about 60 distinct words, so scoring :math:`S` draws
    of :math:`\theta` costs :math:`S \cdot 60 K` products instead of :math:`S \cdot 2000 K`.

    :param theta: ``[..., K]`` mixture weights.
    :param topics: ``[K, V]`` topics.
    :param total_count: tokens per document, ``[...]``, for :meth:`sample`.
    """

    arg_constraints = {"theta": constraints.simplex}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, theta, topics, total_count=None, validate_args=None):
        self.theta, self.topics, self.total_count = theta, topics, total_count
        super().__init__(theta.shape[:-1], topics.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        theta = self.theta.expand(batch_shape + self.theta.shape[-1:])
        total = None if self.total_count is None else torch.as_tensor(self.total_count).expand(batch_shape)
        return TopicMixtureBagOfWords(theta, self.topics, total, validate_args=False)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(self.batch_shape, value.shape[:-1])
        counts = value.expand(shape + value.shape[-1:]).reshape(-1, value.shape[-1])
        theta = self.theta.expand(shape + self.theta.shape[-1:]).reshape(-1, self.theta.shape[-1])
        rows, words = counts.nonzero(as_tuple=True)
        mixture = (theta[rows] * self.topics.T[words]).sum(-1)
        tiny = torch.finfo(mixture.dtype).tiny
        terms = counts[rows, words] * mixture.clamp_min(tiny).log()
        return terms.new_zeros(len(counts)).index_add(0, rows, terms).reshape(shape)

    def sample(self, sample_shape=()):
        logits = (self.theta @ self.topics).clamp_min(torch.finfo(self.theta.dtype).tiny).log()
        return BagOfWordsMultinomial(logits, self.total_count, validate_args=False).sample(sample_shape)
