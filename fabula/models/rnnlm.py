"""The RNN language model: the autoregressive maximum-likelihood baseline, with no latent."""

from __future__ import annotations

import torch

from fabula.data.text import TextBatch
from fabula.models.sentence import SentenceStory
from fabula.nn import LSTMDecoder


def reversed_sentences(batch: TextBatch) -> TextBatch:
    """The batch with each sentence's words in reverse order (``<bos>``, ``<eos>`` and padding
    where they were); the decoder inputs are reversed alike, so word dropout follows its words."""
    steps = torch.arange(batch.tokens.shape[1], device=batch.tokens.device)
    words = (batch.lengths - 1)[:, None]  # n words before <eos>
    source = torch.where((steps >= 1) & (steps <= words), words + 1 - steps, steps)
    tokens = batch.tokens.gather(1, source)
    decoder_inputs = batch.decoder_inputs.gather(1, source[:, :-1])
    return TextBatch(tokens, batch.lengths, batch.index, decoder_inputs)


class RNNLM(SentenceStory):
    r"""An LSTM language model, :math:`p(w_{1:n}) = \prod_t p(w_t \mid w_{<t})`, ending with ``<eos>``.

    With ``reverse`` it reads each sentence right to left, :math:`p(w_{1:n}) = \prod_t p(w_t \mid
    w_{>t})` (then ``<eos>``): the backward language model of constrained sampling
    (:mod:`fabula.models.constrained`). :meth:`log_prob` scores sentences in their own order
    either way; the observation site ``"x"`` of a reverse model holds the reversed sentences
    (its draws read right to left).

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
        reverse: bool = False,
        output: str = "full",
    ):
        super().__init__()
        self.remember(locals())
        self.vocab_size, self.reverse = vocab_size, reverse
        self.decoder = LSTMDecoder(vocab_size, embed_dim, hidden_dim, tie=tie, dropout=dropout, output=output)

    def read(self, batch: TextBatch) -> TextBatch:
        """The batch in the order the decoder reads it (reversed for a backward model)."""
        return reversed_sentences(batch) if self.reverse else batch

    def in_order(self, words: list[str]) -> list[str]:
        """A decoded sentence in reading order: a backward model draws it right to left."""
        return words[::-1] if self.reverse else words

    def model(self, batch) -> None:
        with self.data_plate(batch):
            self.observe(self.read(batch), None)

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {}

    def log_prob(self, batch) -> torch.Tensor:
        r"""Exact :math:`\log p(w_{1:n})` per sentence (the story has no latent)."""
        batch = self.read(batch)
        return self.likelihood(batch, None).log_prob(batch.targets)
