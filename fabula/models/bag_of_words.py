"""The directed bag-of-words story that NVDM and the sigmoid belief net share: a code per
document, then its words from one softmax."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.distributions import BagOfWordsMultinomial
from fabula.models.story import Story


class BagOfWordsStory(Story):
    r"""A document story with one local code :math:`z_d` (the site ``latent_sites[0]``) drawn
    from :meth:`prior`, and words from one softmax over the vocabulary:

    .. math:: w_{d,i} \mid z_d \sim \mathrm{Cat}\big(\mathrm{softmax}(R z_d + b)\big), \quad i = 1..N_d,

    with :math:`R \in \mathbb R^{V\times K}` and :math:`b \in \mathbb R^V` (``decoder``),
    observed as word counts (:class:`~fabula.distributions.BagOfWordsMultinomial`: the
    log-probability of the token sequence, so perplexity is per token and the subclasses'
    compare). Column :math:`R_{:,k}` is the word profile of latent dimension :math:`k`
    (:meth:`topics`). A subclass gives :meth:`prior` and ``latent_sites``.
    """

    reads = "documents"

    def __init__(self, vocab_size: int, latent_dim: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, vocab_size)

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start the bias :math:`b` at the corpus's add-one log unigram frequencies, so that
        training begins from the background word distribution rather than a uniform one."""
        self.decoder.bias.copy_(corpus.log_unigram().to(self.decoder.bias.device))

    def prior(self) -> dist.Distribution:
        """:math:`p(z)` of one document's code, event shape ``[K]``."""
        raise NotImplementedError

    def model(self, batch) -> None:
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        with self.data_plate(batch):
            z = pyro.sample(self.latent_sites[0], self.prior())
            words = BagOfWordsMultinomial(self.decoder(z), total_count=batch.lengths, validate_args=False)
            pyro.sample("x", words, obs=batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {self.latent_sites[0]: self.prior().sample((num,))}

    @torch.no_grad()
    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts, from the codes
        ``z`` (``[N, K]``; drawn from the prior by default)."""
        lengths = torch.as_tensor(lengths, device=self.device)
        if z is None:
            z = self.prior_sample(len(lengths))[self.latent_sites[0]]
        return BagOfWordsMultinomial(self.decoder(z), total_count=lengths).sample()

    @torch.no_grad()
    def topic_words(self, k: int = 10) -> torch.Tensor:
        """``[K, k]``: the ids of the ``k`` words with the largest weight :math:`R_{v,j}` for each
        latent dimension ``j``, largest first."""
        return self.decoder.weight.topk(k, dim=0).indices.T

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The words of :meth:`topic_words`."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        return [[words[i] for i in row] for row in self.topic_words(k).tolist()]
