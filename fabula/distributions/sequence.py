"""Token sequences: scored by one fused cross-entropy with padding masked out, and drawn from an
autoregressive decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints


class MaskedSequenceCategorical(TorchDistribution):
    r"""Tokens :math:`y_{1:T}` with :math:`y_t \sim \mathrm{Cat}(\mathrm{softmax}(\ell_t))` where
    ``mask`` is true; padded steps contribute exactly nothing.

    .. math:: \log p(y) = \sum_t m_t \,\mathrm{log\_softmax}(\ell_t)_{y_t}

    The logits are given, e.g. those of a decoder run on an observed prefix (teacher forcing), so
    this scores a sequence but cannot draw one: :class:`AutoregressiveSequence` both scores and
    draws the sequences of a decoder.

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
        raise NotImplementedError("given logits score one sequence; draw with AutoregressiveSequence")


class AutoregressiveSequence(TorchDistribution):
    r"""Sequences :math:`y_{1:T}` of an autoregressive decoder given a code :math:`z`, ending at their
    first ``<eos>`` (``<pad>`` after it):

    .. math:: \log p(y \mid z) = \sum_{t \le \tau} \log p(y_t \mid y_{<t}, z), \qquad
              \tau = \min\{t : y_t = \langle eos \rangle\} \ (T \text{ without one})

    :meth:`log_prob` runs the decoder once over the value's own prefix ``<bos> y_1 .. y_{T-1}``
    (teacher forcing) and asks its output layer (:mod:`fabula.nn.output`) for the probability of
    each next word only, padding masked out (in training, a layer trained on an estimate, the
    sampled softmax, gives its estimate: :meth:`~fabula.nn.output.OutputLayer.training_log_prob`);
    :meth:`sample` decodes one step at a time for at most ``T`` steps
    (:func:`fabula.generation.draw`), from exactly this distribution (``<pad>`` and ``<bos>`` keep
    the little probability a trained decoder gives them), so ``poutine.uncondition`` and
    ``Predictive`` generate sentences. ``dropped`` marks the steps whose input word the decoder
    reads as ``<unk>`` (word dropout, a training device: Bowman et al. 2016), in scoring and
    drawing alike.

    :param decoder: an :class:`~fabula.nn.LSTMDecoder`.
    :param code: ``[..., K]`` conditioning vectors, whose leading dimensions are the batch shape,
        or ``None`` for a decoder without a code (then ``batch_shape`` is given).
    :param length: :math:`T`, the steps of a sequence.
    :param dropped: optional ``[..., T]`` booleans, broadcastable to the batch shape.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, decoder, code, length: int, batch_shape=(), dropped=None, validate_args=None):
        self.decoder, self.code, self.length, self.dropped = decoder, code, length, dropped
        if code is not None:
            batch_shape = code.shape[:-1]
        super().__init__(torch.Size(batch_shape), torch.Size([length]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        code = None if self.code is None else self.code.expand(batch_shape + self.code.shape[-1:])
        return AutoregressiveSequence(
            self.decoder, code, self.length, batch_shape, self.dropped, validate_args=False
        )

    def log_prob(self, value):
        # imported here: fabula.data imports its synthetic corpora's stories, which import this module
        from fabula.data.text import BOS, EOS, UNK

        if self._validate_args:
            self._validate_sample(value)
        inputs = torch.cat([torch.full_like(value[..., :1], BOS), value[..., :-1]], -1)
        if self.dropped is not None:
            inputs = torch.where(self.dropped, UNK, inputs)
        eos = value == EOS
        upto_eos = eos.cumsum(-1) <= eos.long()  # steps up to and including the first <eos>
        hidden = self.decoder.hidden(inputs, self.code)
        per_token = self.decoder.out.training_log_prob(hidden, value.expand(hidden.shape[:-1]))
        log_p = torch.where(upto_eos, per_token, 0.0).sum(-1)
        return log_p.expand(torch.broadcast_shapes(log_p.shape, self.batch_shape))

    def sample(self, sample_shape=()):
        from fabula.generation import draw  # imported here, as fabula.data is in log_prob

        shape = self._extended_shape(torch.Size(sample_shape))
        lead, n = shape[:-1], math.prod(shape[:-1])
        code = None if self.code is None else self.code.expand(lead + self.code.shape[-1:]).reshape(n, -1)
        dropped = None if self.dropped is None else self.dropped.expand(shape).reshape(n, -1)
        return draw(self.decoder, code, n, self.length, dropped=dropped, markers=True).reshape(shape)
