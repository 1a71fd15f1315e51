"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003) as a story."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.distributions import BagOfWordsMultinomial, TopicMixtureBagOfWords
from fabula.models.story import Story
from fabula.settings import POSITIVE


class LDA(Story):
    r"""LDA: each document a mixture of :math:`K` topics, each topic a distribution over words.

    .. math::
        \theta_d \sim \mathrm{Dir}(\alpha), \qquad
        z_{d,i} \mid \theta_d \sim \mathrm{Cat}(\theta_d), \qquad
        w_{d,i} \mid z_{d,i} \sim \mathrm{Cat}(\beta_{z_{d,i}}), \quad i = 1..N_d,

    with a symmetric concentration :math:`\alpha` and topics :math:`\beta_k = \mathrm{softmax}
    (\ell_k)` (``topic_logits``, ``[K, V]``). The model sums each token's topic out,
    :math:`p(w_{d,i} \mid \theta_d) = (\theta_d^\top \beta)_{w_{d,i}}`, so its one local site is
    ``"theta"`` and the words are observed as counts
    (:class:`~fabula.distributions.TopicMixtureBagOfWords`: the log-probability of the token
    sequence, as for :class:`~fabula.models.NVDM`, so perplexities compare; computed at the
    words each document holds).

    The topics are point estimates. A kind that treats them as Dirichlet(:math:`\eta`) latents
    (collapsed Gibbs sampling, :mod:`fabula.inference.collapsed_gibbs`; variational Bayes,
    :mod:`fabula.inference.variational_bayes`) writes
    its estimate :math:`E[\beta]` into them with :meth:`set_topics`, so every estimator scores
    a story fitted by any kind the same way. It declares
    :class:`~fabula.models.capabilities.DirichletTopics`.

    References: D. Blei, A. Ng, M. Jordan. Latent Dirichlet Allocation. JMLR 2003.
    T. Griffiths, M. Steyvers. Finding scientific topics. PNAS 2004.
    """

    latent_sites = ("theta",)
    reads = "documents"

    def __init__(self, vocab_size: int, num_topics: int = 50, alpha: float = 1.0, eta: float = 0.01):
        super().__init__()
        self.remember(locals())
        POSITIVE.check("alpha", alpha)
        POSITIVE.check("eta", eta)
        self.vocab_size, self.num_topics, self.eta = vocab_size, num_topics, eta
        self.register_buffer("alpha", torch.full((num_topics,), float(alpha)))
        self.topic_logits = nn.Parameter(0.01 * torch.randn(num_topics, vocab_size))

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start every topic at the corpus's add-one unigram frequencies plus small noise, so
        that gradient training begins from the background word distribution."""
        noise = 0.01 * torch.randn(self.num_topics, self.vocab_size)
        self.topic_logits.copy_((corpus.log_unigram() + noise).to(self.topic_logits.device))

    def prior(self) -> dist.Distribution:
        r""":math:`p(\theta) = \mathrm{Dir}(\alpha)`, event shape ``[K]``."""
        return dist.Dirichlet(self.alpha)

    def topic_word(self) -> torch.Tensor:
        r"""``[K, V]``: :math:`\beta`, each row a distribution over the vocabulary."""
        return torch.softmax(self.topic_logits, -1)

    @torch.no_grad()
    def set_topics(self, beta: torch.Tensor) -> None:
        r"""Set :math:`\beta` (``[K, V]``, rows summing to one, every entry positive)."""
        if beta.shape != self.topic_logits.shape or not bool((beta > 0).all()):
            raise ValueError(f"topics must be positive of shape {tuple(self.topic_logits.shape)}")
        self.topic_logits.copy_(beta.log())

    def word_logits(self, theta: torch.Tensor) -> torch.Tensor:
        r"""``[..., V]``: :math:`\log(\theta^\top \beta)`, the log word distribution of a document."""
        return (theta @ self.topic_word()).clamp_min(torch.finfo(theta.dtype).tiny).log()

    def model(self, batch) -> None:
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        with self.data_plate(batch):
            theta = pyro.sample("theta", self.prior())
            words = TopicMixtureBagOfWords(
                theta, self.topic_word(), total_count=batch.lengths, validate_args=False
            )
            pyro.sample("x", words, obs=batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {"theta": self.prior().sample((num,))}

    @torch.no_grad()
    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts, from the topic
        proportions ``z`` (``[N, K]``; drawn from the prior by default)."""
        lengths = torch.as_tensor(lengths, device=self.device)
        if z is None:
            z = self.prior_sample(len(lengths))["theta"]
        return BagOfWordsMultinomial(self.word_logits(z), total_count=lengths).sample()

    @torch.no_grad()
    def topic_words(self, k: int = 10) -> torch.Tensor:
        """``[K, k]``: the ids of each topic's ``k`` most probable words."""
        return self.topic_logits.topk(k, dim=-1).indices

    @torch.no_grad()
    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The ``k`` most probable words of each topic."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        return [[words[int(i)] for i in row] for row in self.topic_words(k)]
