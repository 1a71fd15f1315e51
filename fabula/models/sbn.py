"""The document sigmoid belief net (Mnih & Gregor 2014): binary units, one softmax over words."""

from __future__ import annotations

import dataclasses

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import nn

from fabula.distributions import BagOfWordsMultinomial
from fabula.models.story import Story


class SigmoidBeliefNet(Story):
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
    unit :math:`j` (:meth:`topics`).

    It dreams (:class:`~fabula.models.capabilities.Dreams`): a code from the prior and a
    document from it, as long as the batch's, as a batch (the sleep phase of wake-sleep).

    References: A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief
    Networks. ICML 2014. R. Neal. Connectionist learning of belief networks. Artificial
    Intelligence 1992.
    """

    latent_sites = ("h",)

    def __init__(self, vocab_size: int, latent_dim: int = 50):
        super().__init__()
        self.remember(locals())
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.prior_logits = nn.Parameter(torch.zeros(latent_dim))
        self.decoder = nn.Linear(latent_dim, vocab_size)

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start the bias :math:`b` at the corpus's add-one log unigram frequencies."""
        freq = torch.ones(self.vocab_size).index_add_(0, corpus.ids, corpus.counts)
        self.decoder.bias.copy_((freq / freq.sum()).log().to(self.decoder.bias.device))

    def prior(self) -> dist.Distribution:
        return dist.Bernoulli(logits=self.prior_logits).to_event(1)

    def model(self, batch) -> None:
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        with self.data_plate(batch):
            h = pyro.sample("h", self.prior())
            words = BagOfWordsMultinomial(self.decoder(h), total_count=batch.lengths, validate_args=False)
            pyro.sample("x", words, obs=batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {"h": self.prior().sample((num,))}

    @torch.no_grad()
    def dream(self, batch):
        r"""``({"h": h}, dreamt batch)``: :math:`(h, x) \sim p_\theta`, one per datum, each document
        as long as the datum's, drawn by the story's own model with the observation absent."""
        trace = poutine.trace(poutine.uncondition(self.model)).get_trace(batch)
        return {"h": trace.nodes["h"]["value"]}, dataclasses.replace(batch, counts=trace.nodes["x"]["value"])

    @torch.no_grad()
    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts, from the codes
        ``z`` (``[N, F]`` of 0 / 1; drawn from the prior by default)."""
        lengths = torch.as_tensor(lengths, device=self.device)
        if z is None:
            z = self.prior_sample(len(lengths))["h"]
        return BagOfWordsMultinomial(self.decoder(z), total_count=lengths).sample()

    @torch.no_grad()
    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The ``k`` words with the largest weight :math:`W_{v,j}` for each unit ``j``."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        top = self.decoder.weight.topk(k, dim=0).indices.T  # [F, k]
        return [[words[int(i)] for i in row] for row in top]
