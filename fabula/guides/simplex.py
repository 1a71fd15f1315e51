r"""Guides over a point of the simplex, the topic proportions :math:`\theta` of a topic story:
a logistic normal from an encoder (amortized), or a Dirichlet whose λ another source fits."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.transforms import Transform

from fabula.errors import UsageError
from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP


class AdditiveLogRatio(Transform):
    r""":math:`\theta = \mathrm{softmax}([x, 0])` from :math:`\mathbb R^{K-1}` onto the
    :math:`K`-simplex (Aitchison's additive log-ratio), with
    :math:`\log |\det \partial\theta / \partial x| = \sum_{k=1}^K \log \theta_k`, computed from
    :math:`x` by one log-softmax: a draw whose smallest proportions underflow in float32 keeps a
    finite log-density, where torch's stick-breaking map, taking the logarithm of :math:`\theta`,
    returns an infinite one."""

    domain = constraints.real_vector
    codomain = constraints.simplex
    bijective = True

    def __init__(self, cache_size: int = 1):
        super().__init__(cache_size=cache_size)

    def __eq__(self, other):
        return isinstance(other, AdditiveLogRatio)

    @staticmethod
    def _padded(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 1))

    def _call(self, x):
        return torch.softmax(self._padded(x), -1)

    def _inverse(self, y):
        log = y.log()
        return log[..., :-1] - log[..., -1:]

    def log_abs_det_jacobian(self, x, y):
        return torch.log_softmax(self._padded(x), -1).sum(-1)

    def forward_shape(self, shape):
        return shape[:-1] + (shape[-1] + 1,)

    def inverse_shape(self, shape):
        return shape[:-1] + (shape[-1] - 1,)


def logistic_normal(loc: torch.Tensor, scale: torch.Tensor) -> dist.TransformedDistribution:
    r""":math:`\mathcal{LN}(\mu, \mathrm{diag}\,\sigma^2)` on the simplex through
    :class:`AdditiveLogRatio`, caching its last draw: the log-density of a draw is computed at the
    Gaussian point that made it, not at one recovered by inverting the map (which loses a float32
    draw whose smallest proportions underflow)."""
    base = dist.Normal(loc, scale).to_event(1)
    return dist.TransformedDistribution(base, [AdditiveLogRatio(cache_size=1)])


class LogisticNormalGuide(Guide):
    r""":math:`q_\lambda(\theta \mid x) = \mathcal{LN}(\mu, \mathrm{diag}\,\sigma^2)`: a Gaussian
    on :math:`\mathbb R^{K-1}` mapped onto the :math:`K`-simplex by the additive log-ratio
    (:class:`AdditiveLogRatio`), with :math:`\lambda = (\mu, \log\sigma) =
    \mathrm{MLP}(x)` of the word counts. Its draws are reparameterised, so amortized VI trains
    it through a Dirichlet prior with a Monte Carlo KL: NVLDA of Srivastava & Sutton (2017),
    who replace the Dirichlet by its Laplace approximation instead; here the story keeps its
    Dirichlet and the bound is the ELBO of that story.

    References: A. Srivastava, C. Sutton. Autoencoding Variational Inference for Topic Models.
    ICLR 2017. J. Aitchison, S. Shen. Logistic-normal distributions. Biometrika 1980.
    """

    def __init__(
        self,
        in_features: int,
        num_topics: int,
        hidden: Sequence[int] = (100, 100),
        activation: str = "softplus",
        site: str = "theta",
    ):
        super().__init__()
        self.remember(locals())
        self.in_features, self.num_topics, self.site = in_features, num_topics, site
        self.net = MLP(in_features, hidden, 2 * (num_topics - 1), activation)

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        x = batch.inputs
        if x.shape[-1] != self.in_features:
            raise ValueError(f"guide expects inputs of width {self.in_features}, got {x.shape[-1]}")
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return {"loc": loc, "log_scale": log_scale}

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """:math:`\\mu = 0, \\log\\sigma = 0`."""
        zeros = torch.zeros(num, self.num_topics - 1, device=device)
        return {"loc": zeros, "log_scale": zeros.clone()}

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, logistic_normal(params["loc"], params["log_scale"].exp()))


class DirichletGuide(Guide):
    r""":math:`q_\lambda(\theta) = \mathrm{Dir}(\gamma)`, :math:`\lambda = \gamma` (``concentration``,
    ``[B, K]``), the mean-field factor of variational Bayes for LDA (Blei et al. 2003). It has
    no encoder: its λ comes from a source that fits it per document
    (:class:`~fabula.inference.variational_bayes.MeanFieldTopics`).

    References: D. Blei, A. Ng, M. Jordan. Latent Dirichlet Allocation. JMLR 2003.
    """

    def __init__(self, num_topics: int, site: str = "theta"):
        super().__init__()
        self.remember(locals())
        self.num_topics, self.site = num_topics, site

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        raise UsageError(
            "a Dirichlet guide has no encoder: its concentrations are fitted per document by mean-field "
            "updates (fabula.inference.variational_bayes.MeanFieldTopics)"
        )

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """:math:`\\gamma = 1`: the uniform distribution on the simplex."""
        return {"concentration": torch.ones(num, self.num_topics, device=device)}

    def posterior_mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        r""":math:`E_q[\theta] = \gamma / \sum_k \gamma_k`."""
        return params["concentration"] / params["concentration"].sum(-1, keepdim=True)

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, dist.Dirichlet(params["concentration"]))
