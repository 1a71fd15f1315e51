"""A multinomial over word counts whose log-density is one fused log-softmax and a dot product."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class BagOfWordsMultinomial(TorchDistribution):
    r"""Multinomial word counts :math:`x \sim \mathrm{Mult}(N, \mathrm{softmax}(\ell))`.

    .. math:: \log p(x) = \log N! - \sum_v \log x_v! + \sum_v x_v \,\mathrm{log\_softmax}(\ell)_v

    The coefficient does not depend on the parameters; pass it as ``log_coef`` (precomputed
    per document by :class:`~fabula.data.BagOfWords`) to skip the vocabulary-sized ``lgamma``.
    Unlike :class:`torch.distributions.Multinomial` each document has its own ``N`` (read off
    the counts), and no probabilities are materialised.

    :param logits: ``[..., V]`` unnormalised log-probabilities.
    :param total_count: tokens per document, needed only to :meth:`sample`.
    :param log_coef: optional precomputed multinomial coefficient of the observed counts.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits, total_count=None, log_coef=None, validate_args=None):
        self.logits = logits
        self.total_count = total_count
        self.log_coef = log_coef
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        logits = self.logits.expand(batch_shape + self.event_shape)
        total = None if self.total_count is None else torch.as_tensor(self.total_count).expand(batch_shape)
        coef = None if self.log_coef is None else self.log_coef.expand(batch_shape)
        return BagOfWordsMultinomial(logits, total, coef, validate_args=False)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        log_coef = self.log_coef
        if log_coef is None:
            log_coef = torch.lgamma(value.sum(-1) + 1) - torch.lgamma(value + 1).sum(-1)
        return log_coef + (value * torch.log_softmax(self.logits, -1)).sum(-1)

    def sample(self, sample_shape=()):
        if self.total_count is None:
            raise ValueError("BagOfWordsMultinomial.sample needs total_count")
        shape = self._extended_shape(torch.Size(sample_shape))
        total = torch.as_tensor(self.total_count, device=self.logits.device).long().expand(shape[:-1])
        n_max = int(total.max()) if total.numel() else 0
        logits = self.logits.expand(shape).reshape(-1, shape[-1])
        draws = torch.distributions.Categorical(logits=logits).sample((n_max,)).T  # [M, n_max]
        keep = torch.arange(n_max, device=logits.device) < total.reshape(-1, 1)
        counts = torch.zeros_like(logits).scatter_add_(1, draws, keep.to(logits.dtype))
        return counts.reshape(shape)
