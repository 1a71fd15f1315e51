"""What the sentence stories share: tokens observed under a mask, counted with ``<eos>``."""

from __future__ import annotations

import pyro
import torch

from fabula.distributions import MaskedSequenceCategorical
from fabula.models.story import Story


class SentenceStory(Story):
    """A story whose observation is a padded batch of sentences scored by ``self.decoder``
    (an :class:`~fabula.nn.LSTMDecoder`) under teacher forcing."""

    vocab_size: int
    code_sites: tuple[str, ...] = ()
    """The continuous latent sites whose values, concatenated, condition the decoder."""

    def observe(self, batch, logits: torch.Tensor) -> None:
        """The observation site ``"x"``: the targets under the batch's mask (padding adds nothing)."""
        pyro.sample(
            "x", MaskedSequenceCategorical(logits, batch.mask, validate_args=False), obs=batch.targets
        )

    def code(self, latents: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The decoder's conditioning vector from a draw of the latent sites (``None``: no latent)."""
        return torch.cat([latents[s] for s in self.code_sites], -1) if self.code_sites else None

    def num_tokens(self, batch) -> torch.Tensor:
        """Words plus ``<eos>`` per sentence, the convention of Bowman et al. and Kim et al."""
        return batch.lengths

    def sample_cost(self, batch) -> int:
        return batch.targets.numel() * self.vocab_size
