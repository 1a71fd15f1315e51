r"""A sentence discriminator: an LSTM classifier of real against generated sentences, the critic
of adversarial training (:mod:`fabula.inference.adversarial`).

It reads a sentence :math:`w_1 \dots w_n \langle eos\rangle` (a batch's targets) and returns the
logit of :math:`D(x) = P(\text{real} \mid x)` from the LSTM's output at ``<eos>``, so padding after
it is never read. Words come as ids or as weights over the vocabulary (one-hot or relaxed one-hot
vectors, :func:`~fabula.nn.lstm.embed_words`): the Gumbel-softmax generator's gradient reaches it
through the weights. Yu et al. (2017) use a CNN; an LSTM reads the same input and keeps the module
free of a maximum length.

References: L. Yu, W. Zhang, J. Wang, Y. Yu. SeqGAN: Sequence Generative Adversarial Nets with
Policy Gradient. AAAI 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from fabula.nn.lstm import embed_words, word_embedding


class SentenceDiscriminator(nn.Module):
    """An LSTM over the words up to ``<eos>``, a linear logit of *real* on its last output."""

    def __init__(self, vocab_size: int, embed_dim: int = 64, hidden_dim: int = 64, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = word_embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.logit = nn.Linear(hidden_dim, 1)

    def forward(self, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[N]`` logits of *real* for ``words`` (ids ``[N, T]`` or weights ``[N, T, V]``), each
        row read up to its ``lengths`` (words and ``<eos>``)."""
        h, _ = self.lstm(self.dropout(embed_words(self.embed, words)))
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]
        return self.logit(self.dropout(last)).squeeze(-1)
