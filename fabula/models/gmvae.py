"""Gaussian-mixture sentence VAE (GMVAE; Shi, Zhou, Miao & Li 2020)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.models.sentence import SentenceStory
from fabula.nn import LSTMDecoder


class GMVAE(SentenceStory):
    r"""A sentence generated from ``num_pairs`` independent discrete-continuous latent pairs.

    .. math::
        c_m \sim \mathrm{Cat}(1/K), \qquad z_m \mid c_m \sim \mathcal N(\mu_{m,c_m}, \sigma_{m,c_m}^2 I),
        \qquad p(w_{1:n} \mid z_{1:M}) = \prod_t p(w_t \mid w_{<t}, z)

    with :math:`z = (z_1, \dots, z_M)` feeding an LSTM decoder as in :class:`~fabula.models.LSTMVAE`.
    Sites are ``c0, z0, c1, z1, ...``; guides mark the ``c`` sites for parallel enumeration so
    that ``TraceEnum_ELBO`` sums them out exactly. :meth:`generate_component` decodes a chosen
    component (the paper's per-component generation).

    References: W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for
    Interpretable Text Generation. ICML 2020.
    """

    def __init__(
        self,
        vocab_size: int,
        num_components: int = 10,
        latent_dim: int = 8,
        num_pairs: int = 1,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        dropout: float = 0.0,
        output: str = "full",
    ):
        super().__init__()
        self.remember(locals())
        self.vocab_size, self.num_components, self.latent_dim, self.num_pairs = (
            vocab_size,
            num_components,
            latent_dim,
            num_pairs,
        )
        self.latent_sites = tuple(s for m in range(num_pairs) for s in (f"c{m}", f"z{m}"))
        self.code_sites = tuple(f"z{m}" for m in range(num_pairs))
        self.component_means = nn.Parameter(torch.randn(num_pairs, num_components, latent_dim))
        self.component_log_scales = nn.Parameter(torch.zeros(num_pairs, num_components, latent_dim))
        self.register_buffer("mixture_logits", torch.zeros(num_components))
        self.decoder = LSTMDecoder(
            vocab_size, embed_dim, hidden_dim, latent_dim * num_pairs, dropout=dropout, output=output
        )

    def component(self, m: int, c: torch.Tensor) -> dist.Distribution:
        """:math:`p(z_m \\mid c_m)` for (possibly enumerated) component indices ``c``."""
        return dist.Normal(self.component_means[m][c], self.component_log_scales[m][c].exp()).to_event(1)

    def model(self, batch) -> None:
        with self.data_plate(batch):
            zs = []
            for m in range(self.num_pairs):
                c = pyro.sample(f"c{m}", dist.Categorical(logits=self.mixture_logits))
                zs.append(pyro.sample(f"z{m}", self.component(m, c)))
            self.observe(batch, torch.cat(zs, -1))

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        out = {}
        for m in range(self.num_pairs):
            c = dist.Categorical(logits=self.mixture_logits).sample((num,))
            out[f"c{m}"], out[f"z{m}"] = c, self.component(m, c).sample()
        return out

    def generate_component(self, m: int, k: int, num: int) -> torch.Tensor:
        """Codes ``z`` (``[num, M * D]``) with pair ``m`` drawn from component ``k`` and the other
        pairs from the prior, to decode with :mod:`fabula.generation`."""
        sample = self.prior_sample(num)
        sample[f"z{m}"] = self.component(m, torch.full((num,), k, device=self.device)).sample()
        return torch.cat([sample[f"z{i}"] for i in range(self.num_pairs)], -1)
