"""A diagonal-Gaussian guide whose parameters come from an MLP encoder of the batch inputs."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP


class NormalGuide(Guide):
    r"""Mean-field Gaussian :math:`q_\lambda(z\mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma^2)`.

    :math:`\lambda = (\mu, \log\sigma) = \mathrm{MLP}(x)` where ``x`` is ``batch.inputs``
    (word counts for a bag of words, the vector itself for continuous data). With
    ``hidden=[500]`` this is NVDM's inference network (Miao et al. 2016).

    :param in_features: width of ``batch.inputs``.
    :param latent_dim: size of the latent site.
    :param hidden: hidden layer sizes of the encoder (empty: a linear encoder).
    :param site: name of the latent site in the story.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (500,),
        activation: str = "relu",
        site: str = "z",
    ):
        super().__init__()
        self.in_features, self.latent_dim = in_features, latent_dim
        self.hidden, self.activation, self.site = list(hidden), activation, site
        self.encoder = MLP(in_features, hidden, 2 * latent_dim, activation)

    def config(self) -> dict:
        return {
            "in_features": self.in_features,
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "activation": self.activation,
            "site": self.site,
        }

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        x = batch.inputs
        if x.shape[-1] != self.in_features:
            raise ValueError(f"guide expects inputs of width {self.in_features}, got {x.shape[-1]}")
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        r""":math:`\mu = 0, \log\sigma = 0`: the standard-normal prior."""
        zeros = torch.zeros(num, self.latent_dim, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, dist.Normal(params["loc"], params["log_scale"].exp()).to_event(1))
