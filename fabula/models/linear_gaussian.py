"""A linear-Gaussian story (factor analysis) whose marginal and posterior are exact."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from fabula.models.story import Story


class LinearGaussian(Story):
    r"""Factor analysis with isotropic noise (probabilistic PCA).

    .. math::
        z \sim \mathcal N(0, I_K), \qquad x \mid z \sim \mathcal N(W z + b, \sigma^2 I_D)

    so that :math:`p(x) = \mathcal N(b, W W^\top + \sigma^2 I)` and
    :math:`p(z\mid x) = \mathcal N\big(\Sigma W^\top (x-b)/\sigma^2,\ \Sigma\big)` with
    :math:`\Sigma = (I + W^\top W/\sigma^2)^{-1}`. Used to check estimators against exact values:
    here the bounds of an untrained amortized q lie above the exact NLL, and the importance-weighted
    bound closes in on it as its draws grow.

    >>> import torch
    >>> from fabula.data import Vectors
    >>> from fabula.evaluation import evaluate
    >>> from fabula.guides import NormalGuide
    >>> from fabula.inference import Amortized
    >>> from fabula.models import LinearGaussian
    >>> _ = torch.manual_seed(0)
    >>> story = LinearGaussian(data_dim=6, latent_dim=2, noise_scale=0.5)
    >>> data = Vectors(story.generate(100))
    >>> round(-story.log_marginal(data.x).mean().item(), 2)  # the exact NLL per datum
    7.16
    >>> vi = Amortized(story, NormalGuide(6, 2, hidden=[]))
    >>> nll = {e: evaluate(vi, data, e).summary()["nll"] for e in ("exact", "iw:1000", "iw:10", "elbo")}
    >>> round(nll["exact"], 2)
    7.16
    >>> nll["exact"] < nll["iw:1000"] < nll["iw:10"] < nll["elbo"]
    True

    References: M. Tipping, C. Bishop. Probabilistic Principal Component Analysis. JRSS B 1999.
    """

    latent_sites = ("z",)

    def __init__(self, data_dim: int, latent_dim: int, noise_scale: float = 1.0):
        super().__init__()
        self.remember(locals())
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.weight = nn.Parameter(torch.randn(data_dim, latent_dim) / latent_dim**0.5)
        self.bias = nn.Parameter(torch.zeros(data_dim))
        self.log_noise = nn.Parameter(torch.tensor(float(noise_scale)).log())
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    def model(self, batch) -> None:
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            loc = z @ self.weight.T + self.bias
            pyro.sample("x", dist.Normal(loc, self.log_noise.exp()).to_event(1), obs=batch.x)

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {"z": dist.Normal(self.prior_loc, self.prior_scale).to_event(1).sample((num,))}

    @torch.no_grad()
    def generate(self, num: int) -> torch.Tensor:
        z = self.prior_sample(num)["z"]
        return (
            z @ self.weight.T
            + self.bias
            + self.log_noise.exp() * torch.randn(num, self.data_dim, device=z.device)
        )

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x)` per row of ``x``."""
        cov = self.weight @ self.weight.T + self.log_noise.exp() ** 2 * torch.eye(
            self.data_dim, device=self.bias.device
        )
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov).log_prob(x)

    def log_prob(self, batch) -> torch.Tensor:
        r"""Exact :math:`\log p(x)` per datum of ``batch`` (:meth:`log_marginal` of its rows)."""
        return self.log_marginal(batch.x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact posterior :math:`p(z \\mid x)` per row of ``x``."""
        var = self.log_noise.exp() ** 2
        cov = torch.linalg.inv(
            torch.eye(self.latent_dim, device=self.bias.device) + self.weight.T @ self.weight / var
        )
        loc = (x - self.bias) @ self.weight @ cov / var
        return dist.MultivariateNormal(loc, covariance_matrix=cov)
