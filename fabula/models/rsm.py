"""Replicated Softmax (Salakhutdinov & Hinton 2009): an undirected topic model."""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from fabula.distributions.by_length import BagOfWordsByLength
from fabula.errors import UsageError
from fabula.models.story import Story


class ReplicatedSoftmax(Story):
    r"""The Replicated Softmax: :math:`F` binary hidden units :math:`h` and a document of
    :math:`D` words from one softmax over the vocabulary, observed as its word counts :math:`v`
    (:math:`\sum_k v_k = D`), with the energy

    .. math:: E(v, h) = -\sum_{jk} W_{jk} h_j v_k - \sum_k b_k v_k - D \sum_j a_j h_j

    (the hidden biases scaled by the document's length), so that
    :math:`p_D(v, h) = e^{-E(v, h)} / Z_D`. Its conditionals are exact:

    .. math::
        p(h_j = 1 \mid v) = \sigma(W_j \cdot v + D a_j), \qquad
        w_i \mid h \sim \mathrm{Cat}\big(\mathrm{softmax}(W^\top h + b)\big), \ i = 1..D,

    and summing out :math:`h` gives the free energy
    :math:`F(v) = -b \cdot v - \sum_j \mathrm{softplus}(W_j \cdot v + D a_j)`, the unnormalised
    :math:`-\log p(v)`.

    **Likelihood convention.** :math:`v` stands for the document's ordered token sequence, as in
    NVDM's perplexity (:class:`~fabula.distributions.BagOfWordsMultinomial`, no multinomial
    coefficient): :math:`\log p(w_{1:D}) = -F(v) - \log Z_D` with :math:`Z_D` summed over the
    :math:`V^D` sequences of length :math:`D`,
    :math:`Z_D = \sum_h e^{D a \cdot h} \big(\sum_k e^{b_k + (W^\top h)_k}\big)^D`. It depends on
    :math:`D` only and is estimated by annealing along the length, from :math:`t = 0` words to
    the longest document (:class:`~fabula.evaluation.estimators.AIS`; the hidden units'
    marginal is :math:`e^{D g(h)}`, :class:`~fabula.models.capabilities.LengthTempered`), or
    along the inverse temperature below (:class:`~fabula.evaluation.estimators.TemperedAIS`).

    **Tempered family** (:class:`~fabula.models.capabilities.Undirected`). For annealing, the
    story at :math:`\beta \in [0, 1]` is the RSM with weights :math:`\beta W`, hidden biases
    :math:`\beta a` and visible biases :math:`(1 - \beta) b_0 + \beta b`: at :math:`\beta = 1` the
    story, at :math:`\beta = 0` the base-rate model (independent words from
    :math:`\mathrm{softmax}(b_0)` and uniform hidden units, :math:`\log Z_0 = F \log 2 + D \log
    \sum_k e^{b_{0k}}`), where :math:`b_0` (``base_logits``) is the training corpus's add-one
    smoothed log unigram frequencies (:meth:`init_background`; zero, a uniform base, until then).
    Every method takes ``beta`` (default 1, the story).

    It is undirected: :meth:`model` refuses (a Pyro model of :math:`p(v)` needs :math:`Z_D`, so
    no ELBO, NUTS or predictive draw applies); train it with
    :class:`~fabula.inference.ContrastiveDivergence` and score it with AIS.

    References: R. Salakhutdinov, G. Hinton. Replicated Softmax: an Undirected Topic Model.
    NIPS 2009.
    """

    latent_sites = ("h",)
    reads = "documents"

    def __init__(self, vocab_size: int, hidden: int = 50):
        super().__init__()
        self.remember(locals())
        self.vocab_size, self.hidden = vocab_size, hidden
        self.weight = nn.Parameter(0.01 * torch.randn(hidden, vocab_size))  # W: [F, V]
        self.visible_bias = nn.Parameter(torch.zeros(vocab_size))  # b
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))  # a
        self.register_buffer("base_logits", torch.zeros(vocab_size))  # b_0

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Set the visible biases :math:`b` and the base rate :math:`b_0` to the corpus's add-one
        smoothed log unigram frequencies."""
        logits = corpus.log_unigram().to(self.visible_bias.device)
        self.visible_bias.copy_(logits)
        self.base_logits.copy_(logits)

    def _check(self, counts: torch.Tensor) -> None:
        if counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"counts have {counts.shape[-1]} words per vector, the story expects {self.vocab_size}"
            )

    def _hidden_input(self, counts: torch.Tensor) -> torch.Tensor:
        """:math:`W v + D a`, ``[..., F]``."""
        self._check(counts)
        counts = counts.to(self.weight.dtype)
        return counts @ self.weight.T + counts.sum(-1, keepdim=True) * self.hidden_bias

    def energy(self, counts: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """:math:`E(v, h)` of the story, ``[...]``."""
        return -(h * self._hidden_input(counts)).sum(-1) - counts.to(self.weight.dtype) @ self.visible_bias

    def free_energy(self, counts: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor:
        r""":math:`F_\beta(v) = -((1-\beta) b_0 + \beta b) \cdot v - \sum_j \mathrm{softplus}(\beta
        (W_j \cdot v + D a_j))`, ``[...]``. A tensor ``beta`` of shape ``S`` gives ``S +
        counts.shape[:-1]``, sharing :math:`W v`, and of float64 a float64 result (the products in
        the weights' dtype), whose differences between temperatures keep their precision."""
        u = self._hidden_input(counts)
        v = counts.to(self.weight.dtype)
        base, visible = v @ self.base_logits, v @ self.visible_bias
        beta = torch.as_tensor(beta, device=u.device)
        dtype = torch.promote_types(u.dtype, beta.dtype)
        u, base, visible = u.to(dtype), base.to(dtype), visible.to(dtype)
        b = beta.to(dtype).reshape(beta.shape + (1,) * (counts.dim() - 1))
        return -(base + b * (visible - base) + F.softplus(b[..., None] * u).sum(-1))

    def hidden_given_visible(self, counts: torch.Tensor, beta: float = 1.0) -> dist.Distribution:
        r""":math:`p_\beta(h \mid v)`: independent Bernoullis with logits :math:`\beta (W v + D a)`."""
        return dist.Bernoulli(logits=beta * self._hidden_input(counts)).to_event(1)

    def visible_given_hidden(self, h: torch.Tensor, lengths: torch.Tensor, beta: float = 1.0):
        r""":math:`p_\beta(v \mid h)`: ``lengths`` draws from
        :math:`\mathrm{softmax}((1-\beta) b_0 + \beta (W^\top h + b))`, scored as a sequence
        (:class:`~fabula.distributions.by_length.BagOfWordsByLength`)."""
        logits = (1 - beta) * self.base_logits + beta * (
            h.to(self.weight.dtype) @ self.weight + self.visible_bias
        )
        return BagOfWordsByLength(logits, total_count=lengths, validate_args=False)

    def hidden_log_marginal(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \tilde p_D(h) = D\, g(h)` with :math:`g(h) = a \cdot h + \log \sum_k
        e^{b_k + (W^\top h)_k}`: the hidden units' unnormalised marginal (the words summed out
        over all sequences of length :math:`D`), so :math:`Z_D = \sum_h e^{D g(h)}` and
        :math:`\log Z_D \ge D \max_h g(h)`; ``[...]``, float64."""
        h = h.double()
        g = h @ self.hidden_bias.double() + torch.logsumexp(
            self.visible_bias.double() + h @ self.weight.double(), -1
        )
        return torch.as_tensor(lengths, dtype=torch.float64, device=g.device) * g

    def length_potential(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r""":math:`(a, b, W)` of :math:`g(h) = a \cdot h + \log \sum_k e^{b_k + (W^\top h)_k}`
        (:class:`~fabula.models.capabilities.LengthTempered`), detached."""
        return self.hidden_bias.detach(), self.visible_bias.detach(), self.weight.detach()

    def base_log_partition(self, lengths: torch.Tensor) -> torch.Tensor:
        r""":math:`\log Z_0 = F \log 2 + D \log \sum_k e^{b_{0k}}` for each length, float64."""
        lse = torch.logsumexp(self.base_logits.double(), 0)
        return self.hidden * math.log(2.0) + torch.as_tensor(lengths, dtype=torch.float64) * lse

    def model(self, batch) -> None:
        raise UsageError(
            "the ReplicatedSoftmax is undirected: its p(v) needs the partition function Z_D, so it has "
            "no Pyro model (no ELBO, NUTS or predictive draws); train it with cd:K or pcd:K and score "
            "it with the ais estimator"
        )

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    @torch.no_grad()
    def topic_words(self, k: int = 10) -> torch.Tensor:
        """``[F, k]``: the ids of the ``k`` words with the largest weight :math:`W_{jk}` for each
        hidden unit ``j``, largest first."""
        return self.weight.topk(k, dim=1).indices

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The words of :meth:`topic_words`."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        return [[words[i] for i in row] for row in self.topic_words(k).tolist()]
