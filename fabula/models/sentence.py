"""What the sentence stories share: sentences of a decoder, observed up to ``<eos>`` and counted with it."""

from __future__ import annotations

import pyro
import torch

from fabula.data.text import EOS, UNK
from fabula.distributions import AutoregressiveSequence
from fabula.models.story import Story


class SentenceStory(Story):
    """A story whose observation is a padded batch of sentences scored by ``self.decoder``
    (an :class:`~fabula.nn.LSTMDecoder`) under teacher forcing."""

    vocab_size: int
    reads = "sentences"
    code_sites: tuple[str, ...] = ()
    """The continuous latent sites whose values, concatenated, condition the decoder."""

    def likelihood(self, batch, code: torch.Tensor | None) -> AutoregressiveSequence:
        r""":math:`p(x \mid z)`: sentences of ``self.decoder`` under ``code`` (``None``: no latent), as
        long as the batch's longest (words and ``<eos>``), reading ``<unk>`` wherever the batch's
        decoder inputs do in place of a word (word dropout)."""
        dropped = (batch.decoder_inputs == UNK) & (batch.tokens[:, :-1] != UNK)
        steps = batch.targets.shape[-1]
        return AutoregressiveSequence(self.decoder, code, steps, (batch.size,), dropped, validate_args=False)

    def observe(self, batch, code: torch.Tensor | None) -> None:
        """The observation site ``"x"``: the batch's sentences under :meth:`likelihood` (padding adds
        nothing); drawn from it when the site is unconditioned."""
        pyro.sample("x", self.likelihood(batch, code), obs=batch.targets)

    def code(self, latents: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The decoder's conditioning vector from a draw of the latent sites (``None``: no latent)."""
        return torch.cat([latents[s] for s in self.code_sites], -1) if self.code_sites else None

    def in_order(self, words: list[str]) -> list[str]:
        """The words of one decoded sentence in reading order (the decoder's order here)."""
        return words

    def num_tokens(self, batch) -> torch.Tensor:
        """Words plus ``<eos>`` per sentence, the convention of Bowman et al. and Kim et al."""
        return batch.lengths

    def fit_output(self, corpus) -> None:
        """Arrange the decoder's output layer by ``corpus``'s word counts, ``<eos>`` once per
        sentence (frequency classes, adaptive clusters, the sampling proposal:
        :meth:`~fabula.nn.output.OutputLayer.fit_frequencies`)."""
        counts = torch.bincount(corpus.ids, minlength=self.vocab_size).float()
        counts[EOS] += len(corpus)
        self.decoder.out.fit_frequencies(counts)

    def sample_cost(self, batch) -> int:
        return batch.targets.numel() * self.vocab_size
