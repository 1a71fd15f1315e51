"""Neural Variational Document Model (Miao, Yu & Blunsom 2016)."""

from __future__ import annotations

import pyro.distributions as dist
import torch

from fabula.models.bag_of_words import BagOfWordsStory


class NVDM(BagOfWordsStory):
    r"""NVDM: a bag-of-words variational autoencoder.

    .. math::
        z_d \sim \mathcal N(0, I_K), \qquad
        w_{d,i} \mid z_d \sim \mathrm{Cat}\big(\mathrm{softmax}(R z_d + b)\big), \quad i = 1..N_d

    with :math:`R \in \mathbb R^{V\times K}` and :math:`b \in \mathbb R^V`, observed as word
    counts (:class:`~fabula.distributions.BagOfWordsMultinomial`: its log-probability is that of
    the token sequence, so perplexity is per token). Column :math:`R_{:,k}` is the word profile of
    latent dimension :math:`k` (see :meth:`topics`). The likelihood, generation and topics are
    :class:`~fabula.models.bag_of_words.BagOfWordsStory`'s.

    References: Y. Miao, L. Yu, P. Blunsom. Neural Variational Inference for Text Processing.
    ICML 2016.
    """

    latent_sites = ("z",)

    def __init__(self, vocab_size: int, latent_dim: int = 50):
        super().__init__(vocab_size, latent_dim)
        self.remember(locals())
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def prior(self) -> dist.Distribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
