"""An autoregressive recognition network for binary latents (fDARN's)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from fabula.distributions import AutoregressiveBernoulli
from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP


class AutoregressiveBernoulliGuide(Guide):
    r"""An autoregressive :math:`q` over one binary site: unit :math:`j` is Bernoulli given the
    units before it,

    .. math::
        q_\lambda(h \mid x) = \prod_{j=1}^F \mathrm{Bernoulli}\Big(h_j;\ \sigma\big(\lambda_j +
        \textstyle\sum_{i<j} A_{ji} h_i\big)\Big), \qquad \lambda = \mathrm{MLP}(x),

    (:class:`~fabula.distributions.AutoregressiveBernoulli`) with :math:`\lambda` = ``logits``
    from ``batch.inputs`` (logistic regression with ``hidden=()``, as
    :class:`~fabula.guides.BernoulliGuide`) and a strictly lower-triangular :math:`A` shared by
    all data (``weight``, started at 0: the factorised guide). :math:`\lambda` is the per-datum
    part; :math:`A` is a global parameter of the guide, so a per-datum refinement of
    :math:`\lambda` keeps it fixed.

    Draws are not reparameterisable (train with ``nvil``, ``rws``, ``wake-sleep`` or
    ``Trace_ELBO``). :math:`E_q[h]` has no closed form, so the guide has no ``posterior_mean``:
    a binary unit's mean would be a sum over :math:`2^{j-1}` predecessors. Evaluation counts no
    active units for it, and MCMC started from it starts at a draw.

    :param in_features: width of ``batch.inputs``.
    :param hidden: hidden layer sizes (empty: logistic regression).

    References: A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief
    Networks. ICML 2014. K. Gregor, I. Danihelka, A. Mnih, C. Blundell, D. Wierstra. Deep
    AutoRegressive Networks. ICML 2014.
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
        self.weight = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        x = batch.inputs
        if x.shape[-1] != self.in_features:
            raise ValueError(f"guide expects inputs of width {self.in_features}, got {x.shape[-1]}")
        return {"logits": self.net(x)}

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """Logits 0: with :math:`A = 0`, every unit on with probability 1/2 (a fresh story's prior)."""
        return {"logits": torch.zeros(num, self.latent_dim, device=device)}

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            pyro.sample(self.site, AutoregressiveBernoulli(params["logits"], self.weight))
