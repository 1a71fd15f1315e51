"""Bag-of-words documents of very unequal lengths, drawn a group of similar lengths at a time."""

from __future__ import annotations

import torch

from fabula.distributions.bag_of_words import BagOfWordsMultinomial


class BagOfWordsByLength(BagOfWordsMultinomial):
    r""":class:`~fabula.distributions.BagOfWordsMultinomial` (the same distribution and
    :meth:`log_prob`) whose :meth:`sample` draws the documents of a ``[N, V]`` batch in groups of
    lengths within a factor :math:`\sqrt 2` of each other, each group's tokens padded only to its
    own longest, instead of every document to the batch's longest. For batches whose lengths
    span orders of magnitude (a corpus's documents, or annealing chains over all its lengths) this
    draws a few times the tokens asked for rather than hundreds of times. Its draws differ from
    :class:`~fabula.distributions.BagOfWordsMultinomial`'s for the same seed.
    """

    def sample(self, sample_shape=()):
        if tuple(sample_shape) or self.logits.dim() != 2 or self.total_count is None:
            return super().sample(sample_shape)
        logits = self.logits
        total = torch.as_tensor(self.total_count, device=logits.device).long().expand(logits.shape[:-1])
        probs = torch.softmax(logits, -1)
        counts = torch.zeros_like(logits)
        group = torch.ceil(2 * torch.log2(total.clamp(min=1).double())).long()
        group[total == 0] = -1
        for g in group.unique().tolist():
            if g < 0:
                continue
            rows = (group == g).nonzero().squeeze(-1)
            n = total[rows]
            longest = int(n.max())
            draws = torch.multinomial(probs[rows], longest, replacement=True)  # [rows, longest]
            keep = torch.arange(longest, device=logits.device) < n[:, None]
            counts[rows] = counts[rows].scatter_add_(1, draws, keep.to(logits.dtype))
        return counts
