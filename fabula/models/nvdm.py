"""Neural Variational Document Model (Miao, Yu & Blunsom 2016)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.distributions import BagOfWordsMultinomial
from fabula.models.story import Story


class NVDM(Story):
    r"""NVDM: a bag-of-words variational autoencoder.

    .. math::
        z_d \sim \mathcal N(0, I_K), \qquad
        w_{d,i} \mid z_d \sim \mathrm{Cat}\big(\mathrm{softmax}(R z_d + b)\big), \quad i = 1..N_d

    with :math:`R \in \mathbb R^{V\times K}` and :math:`b \in \mathbb R^V`, observed as word
    counts (:class:`~fabula.distributions.BagOfWordsMultinomial`: its log-probability is that of
    the token sequence, so perplexity is per token). Column :math:`R_{:,k}` is the word profile of
    latent dimension :math:`k` (see :meth:`topics`).

    References: Y. Miao, L. Yu, P. Blunsom. Neural Variational Inference for Text Processing.
    ICML 2016.
    """

    latent_sites = ("z",)

    def __init__(self, vocab_size: int, latent_dim: int = 50):
        super().__init__()
        self.remember(locals())
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, vocab_size)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start the bias :math:`b` at the corpus's add-one log unigram frequencies, so that
        training begins from the background word distribution rather than a uniform one."""
        freq = torch.ones(self.vocab_size).index_add_(0, corpus.ids, corpus.counts)
        self.decoder.bias.copy_((freq / freq.sum()).log().to(self.decoder.bias.device))

    def prior(self) -> dist.Distribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def model(self, batch) -> None:
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        with self.data_plate(batch):
            z = pyro.sample("z", self.prior())
            words = BagOfWordsMultinomial(self.decoder(z), total_count=batch.lengths, validate_args=False)
            pyro.sample("x", words, obs=batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {"z": self.prior().sample((num,))}

    @torch.no_grad()
    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts.

        ``z`` defaults to draws from the prior.
        """
        lengths = torch.as_tensor(lengths, device=self.device)
        if z is None:
            z = self.prior_sample(len(lengths))["z"]
        return BagOfWordsMultinomial(self.decoder(z), total_count=lengths).sample()

    @torch.no_grad()
    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The ``k`` words with the largest weight :math:`R_{v,j}` for each latent dimension ``j``."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        top = self.decoder.weight.topk(k, dim=0).indices.T  # [K, k]
        return [[words[int(i)] for i in row] for row in top]
