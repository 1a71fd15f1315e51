"""The Gaussian Softmax Model (Miao, Grefenstette & Blunsom 2017): a neural topic model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.distributions import BagOfWordsMultinomial, TopicMixtureBagOfWords
from fabula.models.story import Story


class GSM(Story):
    r"""GSM: topic proportions from a Gaussian through a softmax, topics from topic and word
    vectors.

    .. math::
        x_d \sim \mathcal N(0, I_H), \qquad
        \theta_d = \mathrm{softmax}(W x_d + c), \qquad
        w_{d,i} \mid \theta_d \sim \mathrm{Cat}(\theta_d^\top \beta), \quad i = 1..N_d,

    with :math:`W \in \mathbb R^{K\times H}`, :math:`c \in \mathbb R^K` and topics
    :math:`\beta_k = \mathrm{softmax}(t_k V^\top + b)` from topic vectors
    :math:`t \in \mathbb R^{K\times E}`, word vectors :math:`V \in \mathbb R^{|V|\times E}` and
    a vocabulary bias :math:`b` shared by every topic (the background word distribution, as
    NVDM's decoder bias; the paper has none, and :meth:`init_background` starts it at the
    corpus's unigram frequencies). Each token's topic is summed out; the local site is the
    Gaussian ``"z"`` (:math:`x_d`), so NVDM's :class:`~fabula.guides.NormalGuide` fits it, and
    the words are observed as counts (:class:`~fabula.distributions.TopicMixtureBagOfWords`: the
    log-probability of the token sequence, at the words each document holds, so perplexities compare with
    :class:`~fabula.models.NVDM`'s and :class:`~fabula.models.LDA`'s).

    Defaults: :math:`K = H = 50` and :math:`E = 100`.

    References: Y. Miao, E. Grefenstette, P. Blunsom. Discovering Discrete Latent Topics with
    Neural Variational Inference. ICML 2017.
    """

    latent_sites = ("z",)
    reads = "documents"

    def __init__(self, vocab_size: int, num_topics: int = 50, latent_dim: int = 50, embed_dim: int = 100):
        super().__init__()
        self.remember(locals())
        self.vocab_size, self.num_topics, self.latent_dim = vocab_size, num_topics, latent_dim
        self.mixing = nn.Linear(latent_dim, num_topics)
        # logits t_k . v_w of standard deviation E^{-1/2} at the start
        self.topic_vectors = nn.Parameter(torch.randn(num_topics, embed_dim) * embed_dim**-0.5)
        self.word_vectors = nn.Parameter(torch.randn(vocab_size, embed_dim) * embed_dim**-0.5)
        self.word_bias = nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start the bias :math:`b` at the corpus's add-one log unigram frequencies, so that
        training begins near the background word distribution rather than a uniform one."""
        self.word_bias.copy_(corpus.log_unigram().to(self.word_bias.device))

    def prior(self) -> dist.Distribution:
        r""":math:`p(x) = \mathcal N(0, I_H)`, event shape ``[H]``."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def proportions(self, z: torch.Tensor) -> torch.Tensor:
        r"""``[..., K]``: :math:`\theta = \mathrm{softmax}(W z + c)`."""
        return torch.softmax(self.mixing(z), -1)

    def topic_word(self) -> torch.Tensor:
        r"""``[K, V]``: :math:`\beta`, each row a distribution over the vocabulary."""
        return torch.softmax(self.topic_vectors @ self.word_vectors.T + self.word_bias, -1)

    def word_logits(self, z: torch.Tensor) -> torch.Tensor:
        r"""``[..., V]``: :math:`\log(\theta^\top \beta)`, the log word distribution of a document."""
        mixture = self.proportions(z) @ self.topic_word()
        return mixture.clamp_min(torch.finfo(mixture.dtype).tiny).log()

    def model(self, batch) -> None:
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        with self.data_plate(batch):
            z = pyro.sample("z", self.prior())
            words = TopicMixtureBagOfWords(
                self.proportions(z), self.topic_word(), total_count=batch.lengths, validate_args=False
            )
            pyro.sample("x", words, obs=batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {"z": self.prior().sample((num,))}

    @torch.no_grad()
    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts, from the codes
        ``z`` (``[N, H]``; drawn from the prior by default)."""
        lengths = torch.as_tensor(lengths, device=self.device)
        if z is None:
            z = self.prior_sample(len(lengths))["z"]
        return BagOfWordsMultinomial(self.word_logits(z), total_count=lengths).sample()

    @torch.no_grad()
    def topic_words(self, k: int = 10) -> torch.Tensor:
        r"""``[K, k]``: the ids of each topic's ``k`` most probable words relative to the shared
        background, the largest :math:`t_k \cdot v_w` (:math:`\log \beta_{k,w} - b_w` up to a
        constant of the topic); ranked with :math:`b`, every topic would lead with the corpus's
        most frequent words."""
        return (self.topic_vectors @ self.word_vectors.T).topk(k, dim=-1).indices

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The words of :meth:`topic_words`."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        return [[words[i] for i in row] for row in self.topic_words(k).tolist()]
