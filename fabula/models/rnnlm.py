"""The RNN language model: the autoregressive maximum-likelihood baseline, with no latent."""

from __future__ import annotations

import torch

from fabula.models.sentence import SentenceStory
from fabula.nn import LSTMDecoder


class RNNLM(SentenceStory):
    r"""An LSTM language model, :math:`p(w_{1:n}) = \prod_t p(w_t \mid w_{<t})`, ending with ``<eos>``.

    References: T. Mikolov et al. Recurrent neural network based language model. Interspeech 2010.
    """

    latent_sites = ()

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        tie: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.remember(locals())
        self.vocab_size = vocab_size
        self.decoder = LSTMDecoder(vocab_size, embed_dim, hidden_dim, tie=tie, dropout=dropout)

    def model(self, batch) -> None:
        with self.data_plate(batch):
            self.observe(batch, None)

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {}

    def log_prob(self, batch) -> torch.Tensor:
        r"""Exact :math:`\log p(w_{1:n})` per sentence (the story has no latent)."""
        return self.likelihood(batch, None).log_prob(batch.targets)
