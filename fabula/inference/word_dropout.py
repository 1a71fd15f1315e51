"""Word dropout (Bowman et al. 2016): weaken the decoder's view of the sentence during training."""

from __future__ import annotations

import torch

from fabula.data.text import UNK
from fabula.errors import SettingsError


def word_dropout(batch, rate: float):
    r"""The batch with each decoder input word replaced by ``<unk>`` with probability ``rate``.

    Only the decoder's input words change (``<bos>``, ``<eos>`` and padding are kept); the targets and what the
    encoder reads do not. Inference objects apply it to training steps only, never to evaluation.

    References: S. Bowman et al. Generating Sentences from a Continuous Space. CoNLL 2016.
    """
    if not 0.0 <= rate <= 1.0:
        raise SettingsError(f"word dropout rate must be in [0, 1], got {rate}")
    inputs = batch.decoder_inputs
    drop = (torch.rand(inputs.shape, device=inputs.device) < rate) & (inputs >= UNK)
    return batch.with_decoder_inputs(torch.where(drop, UNK, inputs))
