"""Word counts scored as their tokens read in some order, each token given the ones before it."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

#: Keys of the order hash are 31-bit integers; a padding position gets this one, larger than all.
_PAST_THE_END = 2**31
_MASK = _PAST_THE_END - 1


def _mix(x: torch.Tensor) -> torch.Tensor:
    """An integer hash of 31-bit integers to 31-bit integers (each product stays below
    :math:`2^{58}`, so int64 never overflows)."""
    x = x & _MASK
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK
    return (x >> 16) ^ x


class AutoregressiveBagOfWords(TorchDistribution):
    r"""A document of :math:`N` tokens drawn one at a time from an autoregressive ``network``,
    observed as its word counts :math:`x` (:math:`x_v` occurrences of word :math:`v`).

    The counts say which tokens, not in which order. :meth:`log_prob` reads them in ``orders``
    orders :math:`o^1..o^R`, each a permutation of the document's token multiset, and averages the
    log-probability of the token sequence in each order:

    .. math:: \log p(x) := \frac 1R \sum_{r=1}^R \log p(v_{o^r}), \qquad
              \log p(v_o) = \sum_{i=1}^N \log p(v_{o_i} \mid v_{o_{<i}})

    (the mean of the log-probabilities, not the log of their mean). As for
    :class:`~fabula.distributions.BagOfWordsMultinomial`, that is a token sequence's probability
    without the multinomial coefficient, so :math:`\exp(-\log p / N)` is a perplexity per token.
    With ``index`` (each document's position in its corpus) the orders are fixed by a hash of
    the document's index, the order's number and the position, so that a document gets the same
    orders in every call and in any batch; without it each call draws fresh uniform orders.
    :meth:`sample` draws documents of ``total_count`` tokens from the network, so that
    ``poutine.uncondition`` and ``Predictive`` generate documents as long as the observed ones.

    :param network: a module with ``vocab_size``, ``sequence_log_prob(tokens, lengths)`` (``[...]``:
        the log-probability of each row of ``tokens`` ``[..., D]`` read left to right up to its
        length) and ``draw(lengths)`` (``[n, V]`` counts of documents of the given lengths).
    :param total_count: tokens per document, ``[...]``, the batch shape.
    :param orders: :math:`R`, the orders averaged per document.
    :param index: ``[...]`` long, broadcastable to the batch shape, or ``None`` (random orders).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, network, total_count, orders: int = 1, index=None, validate_args=None):
        if orders < 1:
            raise ValueError(f"orders must be >= 1, got {orders}")
        self.network, self.total_count, self.orders, self.index = network, total_count, orders, index
        batch_shape = torch.as_tensor(total_count).shape
        super().__init__(batch_shape, torch.Size([network.vocab_size]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        total = torch.as_tensor(self.total_count).expand(batch_shape)
        return AutoregressiveBagOfWords(self.network, total, self.orders, self.index, validate_args=False)

    def _keys(self, rows: torch.Size, length: int, device) -> torch.Tensor:
        """``[R, *rows, length]`` sort keys of the positions: hashed or random 31-bit integers."""
        shape = (self.orders, *rows, length)
        if self.index is None:
            return torch.randint(0, _PAST_THE_END, shape, device=device)
        index = self.index.to(device).expand(rows)[None, ..., None]
        order = torch.arange(self.orders, device=device).reshape(-1, *[1] * len(rows), 1)
        position = torch.arange(length, device=device)
        return _mix(_mix(_mix(index) + order) + position).expand(shape)

    def ordered_tokens(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens of the counts ``value`` in each of the :math:`R` orders, ``[R, ..., D]``
        (padded past each document's length), and the lengths ``[...]``."""
        rows = value.shape[:-1]
        if self.index is not None:
            rows = torch.broadcast_shapes(rows, self.index.shape)
        counts = value.expand(rows + value.shape[-1:]).reshape(-1, value.shape[-1]).long()
        lengths = counts.sum(-1)
        length = int(lengths.max()) if lengths.numel() else 0
        vocab = torch.arange(counts.shape[-1], device=value.device)
        words = torch.repeat_interleave(vocab.expand_as(counts).reshape(-1), counts.reshape(-1))
        filled = torch.arange(length, device=value.device) < lengths[:, None]
        tokens = torch.zeros(filled.shape, dtype=torch.long, device=value.device)
        tokens[filled] = words  # each document's tokens by word id
        keys = self._keys(rows, length, value.device).reshape(self.orders, *filled.shape)
        keys = keys.masked_fill(~filled, _PAST_THE_END)
        order = keys.argsort(dim=-1, stable=True)  # a permutation of each document's tokens; padding last
        ordered = tokens.expand_as(order).gather(-1, order)
        return ordered.reshape(self.orders, *rows, length), lengths.reshape(rows)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        tokens, lengths = self.ordered_tokens(value)
        log_p = self.network.sequence_log_prob(tokens, lengths.expand(tokens.shape[:-1])).mean(0)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        total = torch.as_tensor(self.total_count).expand(shape[:-1]).reshape(-1)
        return self.network.draw(total).reshape(shape)
