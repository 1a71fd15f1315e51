"""Diagonal-Gaussian guides: an encoder of the batch gives each datum's mean and log-scale."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.errors import SettingsError
from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP, BagOfWordsEncoder, LSTMEncoder


class GaussianGuide(Guide):
    r"""Mean-field Gaussian :math:`q_\lambda(z\mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` over
    one latent site, with :math:`\lambda = (\mu, \log\sigma) = \mathrm{net}(\text{batch})`.

    Subclasses build ``self.net``, a module from a batch to ``[B, 2 K]``.
    """

    net: nn.Module

    def __init__(self, latent_dim: int, site: str = "z"):
        super().__init__()
        self.latent_dim, self.site = latent_dim, site

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        loc, log_scale = self.net(batch).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def posterior_mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """:math:`E_q[z] = \\mu`."""
        return params["loc"]

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """:math:`\\mu = 0, \\log\\sigma = 0`: the standard-normal prior."""
        zeros = torch.zeros(num, self.latent_dim, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, dist.Normal(params["loc"], params["log_scale"].exp()).to_event(1))


class _Inputs(nn.Module):
    """``batch.inputs`` checked for width, then an MLP."""

    def __init__(self, in_features: int, mlp: nn.Module):
        super().__init__()
        self.in_features, self.mlp = in_features, mlp

    def forward(self, batch) -> torch.Tensor:
        x = batch.inputs
        if x.shape[-1] != self.in_features:
            raise ValueError(f"guide expects inputs of width {self.in_features}, got {x.shape[-1]}")
        return self.mlp(x)


class NormalGuide(GaussianGuide):
    """:class:`GaussianGuide` with an MLP over ``batch.inputs`` (word counts of a bag of words,
    the vector itself for continuous data). With ``hidden=[500]`` this is NVDM's inference
    network (Miao et al. 2016).

    :param in_features: width of ``batch.inputs``.
    :param hidden: hidden layer sizes (empty: a linear encoder).
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (500,),
        activation: str = "relu",
        site: str = "z",
    ):
        super().__init__(latent_dim, site)
        self.remember(locals())
        self.net = _Inputs(in_features, MLP(in_features, hidden, 2 * latent_dim, activation))


class SentenceGuide(GaussianGuide):
    """:class:`GaussianGuide` over a sentence: an LSTM encoder's last state (Bowman et al. 2016;
    Kim et al. 2018) or an MLP over its word counts (``encoder="bow"``), then a linear layer.
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int,
        embed_dim: int = 256,
        hidden_dim: int = 256,
        encoder: str = "lstm",
        site: str = "z",
    ):
        super().__init__(latent_dim, site)
        self.remember(locals())
        if encoder not in ("lstm", "bow"):
            raise SettingsError(f"encoder must be 'lstm' or 'bow', got {encoder!r}")
        body = (
            LSTMEncoder(vocab_size, embed_dim, hidden_dim)
            if encoder == "lstm"
            else BagOfWordsEncoder(vocab_size, hidden_dim)
        )
        self.net = nn.Sequential(body, nn.Linear(hidden_dim, 2 * latent_dim))


class EmptyGuide(Guide):
    """The guide of a story without local latents (an RNN language model): samples nothing,
    so every ELBO reduces to the exact log-likelihood."""

    def __init__(self):
        super().__init__()
        self.remember({})

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        return {}

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        return {}

    def forward(self, batch, params=None) -> None:
        return None


class MixtureGuide(Guide):
    r""":math:`q(c_m \mid x) = \mathrm{Cat}(\pi_m(x))` and :math:`q(z_m \mid x) = \mathcal N(\mu_m(x),
    \sigma_m(x)^2)` for each latent pair of a :class:`~fabula.models.GMVAE`, from one LSTM
    encoder of the sentence. The ``c`` sites are marked ``infer={"enumerate": "parallel"}``: under
    ``TraceEnum_ELBO`` they are summed out exactly; other estimators sample them."""

    def __init__(
        self,
        vocab_size: int,
        num_components: int,
        latent_dim: int,
        num_pairs: int = 1,
        embed_dim: int = 256,
        hidden_dim: int = 256,
    ):
        super().__init__()
        self.remember(locals())
        self.num_components, self.latent_dim, self.num_pairs = num_components, latent_dim, num_pairs
        width = num_pairs * (num_components + 2 * latent_dim)
        self.net = nn.Sequential(LSTMEncoder(vocab_size, embed_dim, hidden_dim), nn.Linear(hidden_dim, width))

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        out = self.net(batch).reshape(batch.size, self.num_pairs, -1)
        K, D = self.num_components, self.latent_dim
        return {"c_logits": out[..., :K], "loc": out[..., K : K + D], "log_scale": out[..., K + D :]}

    def posterior_mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """:math:`E_q[z_{1:M}]`, the pairs' means concatenated: ``[B, M * D]``."""
        return params["loc"].flatten(1)

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        zeros = torch.zeros(num, self.num_pairs, self.latent_dim, device=device)
        return {
            "c_logits": torch.zeros(num, self.num_pairs, self.num_components, device=device),
            "loc": zeros,
            "log_scale": zeros.clone(),
        }

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            for m in range(self.num_pairs):
                pyro.sample(
                    f"c{m}",
                    dist.Categorical(logits=params["c_logits"][:, m]),
                    infer={"enumerate": "parallel"},
                )
                pyro.sample(
                    f"z{m}", dist.Normal(params["loc"][:, m], params["log_scale"][:, m].exp()).to_event(1)
                )
