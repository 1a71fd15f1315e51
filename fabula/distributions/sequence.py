"""Token sequences scored by one fused cross-entropy, with padding masked out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class MaskedSequenceCategorical(TorchDistribution):
    r"""Tokens :math:`y_{1:T}` with :math:`y_t \sim \mathrm{Cat}(\mathrm{softmax}(\ell_t))` where
    ``mask`` is true; padded steps contribute exactly nothing.

    .. math:: \log p(y) = \sum_t m_t \,\mathrm{log\_softmax}(\ell_t)_{y_t}

    The logits are those of an autoregressive decoder run on the observed prefix (teacher
    forcing), so this scores a sequence but cannot draw one: generation lives in
    :mod:`fabula.generation`.

    :param logits: ``[..., T, V]``.
    :param mask: ``[..., T]`` booleans, broadcastable to the logits' leading shape.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, logits, mask, validate_args=None):
        self.logits, self.mask = logits, mask
        super().__init__(logits.shape[:-2], logits.shape[-2:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        logits = self.logits.expand(batch_shape + self.logits.shape[-2:])
        return MaskedSequenceCategorical(logits, self.mask, validate_args=False)

    def log_prob(self, value):
        shape = self.logits.shape[:-1]
        value = value.expand(shape)
        nll = F.cross_entropy(
            self.logits.reshape(-1, self.logits.shape[-1]), value.reshape(-1), reduction="none"
        ).reshape(shape)
        return -torch.where(self.mask.expand(shape), nll, 0.0).sum(-1)

    def sample(self, sample_shape=()):
        raise NotImplementedError(
            "decode autoregressively with fabula.generation, not from teacher-forced logits"
        )
