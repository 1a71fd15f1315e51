"""Word counts scored as the token sequence they summarise: one fused log-softmax and a dot product."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class BagOfWordsMultinomial(TorchDistribution):
    r"""A document of :math:`N` tokens drawn i.i.d. from :math:`\mathrm{softmax}(\ell)`, observed as its
    word counts :math:`x` (:math:`x_v` occurrences of word :math:`v`, :math:`\sum_v x_v = N`).

    :meth:`log_prob` is the log-probability of the document's token sequence :math:`w_{1:N}`, of
    which the counts are a sufficient statistic:

    .. math:: \log p(w_{1:N}) = \sum_{i=1}^N \log \mathrm{softmax}(\ell)_{w_i}
              = \sum_v x_v \,\mathrm{log\_softmax}(\ell)_v

    so that :math:`\exp(-\log p / N)` is a perplexity per token, as in Miao et al. (2016), and a
    story observing counts with it needs no correction. The multinomial probability of the count
    vector itself adds :math:`\log N! - \sum_v \log x_v!`, which depends on neither parameters nor
    latents: no bound's gradient, no posterior and no difference of bounds changes without it.
    Unlike :class:`torch.distributions.Multinomial` each document has its own :math:`N`, and no
    probabilities are materialised.

    :param logits: ``[..., V]`` unnormalised log-probabilities.
    :param total_count: tokens per document, ``[...]``; :meth:`sample` draws documents of these
        lengths. A story passes its batch's lengths, so that ``poutine.uncondition`` and
        ``Predictive`` generate documents as long as the observed ones.

    References: Y. Miao, L. Yu, P. Blunsom. Neural Variational Inference for Text Processing.
    ICML 2016.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits, total_count=None, validate_args=None):
        self.logits = logits
        self.total_count = total_count
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        logits = self.logits.expand(batch_shape + self.event_shape)
        total = None if self.total_count is None else torch.as_tensor(self.total_count).expand(batch_shape)
        return BagOfWordsMultinomial(logits, total, validate_args=False)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return (value * torch.log_softmax(self.logits, -1)).sum(-1)

    def sample(self, sample_shape=()):
        if self.total_count is None:
            raise ValueError(
                "BagOfWordsMultinomial.sample needs total_count, the tokens per document "
                "(a story passes its batch's lengths)"
            )
        shape = self._extended_shape(torch.Size(sample_shape))
        total = torch.as_tensor(self.total_count, device=self.logits.device).long().expand(shape[:-1])
        n_max = int(total.max()) if total.numel() else 0
        logits = self.logits.expand(shape).reshape(-1, shape[-1])
        draws = torch.distributions.Categorical(logits=logits).sample((n_max,)).T  # [M, n_max]
        keep = torch.arange(n_max, device=logits.device) < total.reshape(-1, 1)
        counts = torch.zeros_like(logits).scatter_add_(1, draws, keep.to(logits.dtype))
        return counts.reshape(shape)
