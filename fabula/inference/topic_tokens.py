r"""The tokens of a batch of documents, laid out for samplers that visit them position by position.

A bag of words gives each document's tokens as its counts; fixing an order (each word id's
copies, ids ascending) makes them a sequence, and the samplers of a topic story
(:mod:`fabula.inference.collapsed_gibbs`, :mod:`fabula.evaluation.left_to_right`) visit the
:math:`i`-th token of every document at once: position :math:`i` holds the documents longer than
:math:`i`, longest first, so each position's documents are a prefix of the batch sorted by length
and one loop over positions, vectorised over documents, visits every token once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenLayout:
    """The tokens of ``B`` documents, ``T`` in all.

    :param words: ``[T]`` word ids, position-major (position 0 of every document, then 1, ...).
    :param tokens: ``[T]`` each slot's token in document-major order (the documents as given,
        each one's tokens by ascending word id), to read and write per-token state kept that way.
    :param order: ``[B]`` the documents longest first: the rank ``r`` of a slot's document is its
        index into ``order``.
    :param offsets: ``Lmax + 1`` slot offsets of the positions; position ``i`` holds the first
        ``offsets[i + 1] - offsets[i]`` ranks.
    :param lengths: ``[B]`` tokens per document.
    """

    words: torch.Tensor
    tokens: torch.Tensor
    order: torch.Tensor
    offsets: list[int]
    lengths: torch.Tensor

    @classmethod
    def of(cls, counts: torch.Tensor) -> TokenLayout:
        """The layout of the documents of ``counts`` (``[B, V]``, whole numbers)."""
        doc, word = counts.nonzero(as_tuple=True)
        repeats = counts[doc, word].long()
        doc, word = doc.repeat_interleave(repeats), word.repeat_interleave(repeats)
        lengths = counts.sum(-1).round().long()
        starts = lengths.cumsum(0) - lengths
        within = torch.arange(len(doc), device=counts.device) - starts[doc]
        order = torch.argsort(lengths, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=order.device)
        longest = int(lengths.max()) if len(lengths) else 0
        ascending = lengths[order].flip(0)
        positions = torch.arange(longest, device=counts.device)
        active = len(lengths) - torch.searchsorted(ascending, positions, right=True)
        offsets = torch.cat([active.new_zeros(1), active.cumsum(0)])
        slot = offsets[within] + rank[doc]
        tokens = torch.empty_like(slot)
        tokens[slot] = torch.arange(len(slot), device=slot.device)
        return cls(word[tokens], tokens, order, offsets.tolist(), lengths)

    def positions(self):
        """``(start, stop)`` of each position's slots; the documents there are ranks ``0 .. stop - start - 1``."""
        return zip(self.offsets[:-1], self.offsets[1:], strict=True)


def categorical_rows(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """``[n]``: one draw per row of the unnormalised ``weights`` (``[n, K]``) by inverting its
    CDF at ``uniform`` (``[n]``, in [0, 1))."""
    cdf = weights.cumsum(-1)
    drawn = torch.searchsorted(cdf, uniform[:, None] * cdf[:, -1:], right=True)
    return drawn.squeeze(-1).clamp_max(weights.shape[-1] - 1)
