"""The document sigmoid belief net (Mnih & Gregor 2014): binary units, one softmax over words."""

from __future__ import annotations

import dataclasses

import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from fabula.models.bag_of_words import BagOfWordsStory


class SigmoidBeliefNet(BagOfWordsStory):
    r"""A one-layer sigmoid belief net over documents: a binary code, then words from one softmax.

    .. math::
        h_{d,j} \sim \mathrm{Bernoulli}\big(\sigma(a_j)\big), \quad j = 1..F, \qquad
        w_{d,i} \mid h_d \sim \mathrm{Cat}\big(\mathrm{softmax}(W h_d + b)\big), \quad i = 1..N_d

    with learned prior logits :math:`a \in \mathbb R^F`, :math:`W \in \mathbb R^{V\times F}` and
    :math:`b \in \mathbb R^V`, observed as word counts
    (:class:`~fabula.distributions.BagOfWordsMultinomial`: the log-probability of the token
    sequence, as :class:`~fabula.models.NVDM`'s, so their perplexities compare). The code is the
    local latent site ``"h"`` (``[B, F]``, values 0.0 / 1.0) in the data plate, so every
    estimator, diagnostic and Pyro tool applies; :math:`\log p(x)` sums over :math:`2^F` codes,
    so the story declares no exact likelihood and is bounded with a q over binary units
    (:class:`~fabula.guides.BernoulliGuide`). Column :math:`W_{:,j}` is the word profile of
    unit :math:`j` (:meth:`topics`). The likelihood, generation and topics are
    :class:`~fabula.models.bag_of_words.BagOfWordsStory`'s, as NVDM's.

    It dreams (:class:`~fabula.models.capabilities.Dreams`): a code from the prior and a
    document from it, as long as the batch's, as a batch (the sleep phase of wake-sleep).

    References: A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief
    Networks. ICML 2014. R. Neal. Connectionist learning of belief networks. Artificial
    Intelligence 1992.
    """

    latent_sites = ("h",)

    def __init__(self, vocab_size: int, latent_dim: int = 50):
        super().__init__(vocab_size, latent_dim)
        self.remember(locals())
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))

    def prior(self) -> dist.Distribution:
        return dist.Bernoulli(logits=self.prior_logits).to_event(1)

    @torch.no_grad()
    def dream(self, batch):
        r"""``({"h": h}, dreamt batch)``: :math:`(h, x) \sim p_\theta`, one per datum, each document
        as long as the datum's, drawn by the story's own model with the observation absent."""
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(batch)
        return {"h": trace.nodes["h"]["value"]}, dataclasses.replace(batch, counts=trace.nodes["x"]["value"])
