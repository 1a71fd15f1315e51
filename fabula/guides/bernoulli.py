"""A recognition network for binary latents: independent Bernoulli units with logits from an MLP."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP


class BernoulliGuide(Guide):
    r"""Factorised Bernoulli :math:`q_\lambda(h \mid x) = \prod_j \mathrm{Bernoulli}\big(h_j;
    \sigma(\lambda_j)\big)` over one binary site, with :math:`\lambda = \text{logits} =
    \mathrm{MLP}(x)` of ``batch.inputs`` (the word counts of a bag of words). With
    ``hidden=()`` it is logistic regression on the counts, the form of the recognition model of
    Mnih & Gregor's (2014) one-layer sigmoid belief nets.

    Its draws are not reparameterisable: it is trained by score-function or wake-sleep
    gradients (:mod:`~fabula.inference.nvil`, :mod:`~fabula.inference.wake_sleep`,
    ``Trace_ELBO``), and the mean-field ELBO refuses it. The site is not marked for
    enumeration, which would sum over :math:`2^F` codes.

    :param in_features: width of ``batch.inputs``.
    :param hidden: hidden layer sizes (empty: logistic regression).

    References: A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief
    Networks. ICML 2014.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int,
        hidden: Sequence[int] = (),
        activation: str = "tanh",
        site: str = "h",
    ):
        super().__init__()
        self.remember(locals())
        self.in_features, self.latent_dim, self.site = in_features, latent_dim, site
        self.net = MLP(in_features, hidden, latent_dim, activation)

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        x = batch.inputs
        if x.shape[-1] != self.in_features:
            raise ValueError(f"guide expects inputs of width {self.in_features}, got {x.shape[-1]}")
        return {"logits": self.net(x)}

    def posterior_mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        r""":math:`E_q[h] = \sigma(\lambda)`."""
        return torch.sigmoid(params["logits"])

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """Logits 0: every unit on with probability 1/2 (a fresh story's prior)."""
        return {"logits": torch.zeros(num, self.latent_dim, device=device)}

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, dist.Bernoulli(logits=params["logits"]).to_event(1))
