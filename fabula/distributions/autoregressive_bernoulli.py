"""Binary vectors whose units are drawn in order, each given the ones before it (DARN's units)."""

from __future__ import annotations

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn.functional import softplus


class AutoregressiveBernoulli(TorchDistribution):
    r"""A fully visible sigmoid belief net over :math:`h \in \{0, 1\}^F`: unit :math:`j` is
    Bernoulli given the units before it,

    .. math::
        p(h) = \prod_{j=1}^F \mathrm{Bernoulli}\big(h_j;\ \sigma(\eta_j)\big), \qquad
        \eta_j = \ell_j + \sum_{i<j} A_{ji} h_i,

    with per-unit logits :math:`\ell` (a learned bias for a prior; the output of a recognition
    network, a context per datum, for a posterior) and couplings :math:`A`, of which only the
    strict lower triangle is read: the rest of ``weight`` gets no gradient. :meth:`log_prob`
    computes every :math:`\eta_j` of a value in one masked matmul; :meth:`sample` draws the
    :math:`F` units in order. Values are 0.0 / 1.0 floats, as those of
    ``Bernoulli(...).to_event(1)``. Draws are not reparameterisable; :math:`E[h]`, the entropy
    and the :math:`2^F` support are not offered.

    :param logits: ``[..., F]`` :math:`\ell`; its leading dimensions are the batch shape.
    :param weight: ``[F, F]`` :math:`A`, shared by the batch.

    References: K. Gregor, I. Danihelka, A. Mnih, C. Blundell, D. Wierstra. Deep AutoRegressive
    Networks. ICML 2014. A. Mnih, K. Gregor. Neural Variational Inference and Learning in Belief
    Networks. ICML 2014 (fDARN).
    """

    arg_constraints = {"logits": constraints.real_vector, "weight": constraints.real}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(self, logits, weight, validate_args=None):
        size = logits.shape[-1:]
        if weight.shape != size + size:
            raise ValueError(
                f"weight must be [F, F] = {tuple(size + size)} for logits [..., F], got {tuple(weight.shape)}"
            )
        self.logits, self.weight = logits, weight
        super().__init__(logits.shape[:-1], size, validate_args=validate_args)

    @property
    def coupling(self) -> torch.Tensor:
        """:math:`A` with its diagonal and upper triangle zeroed."""
        return self.weight.tril(-1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return AutoregressiveBernoulli(
            self.logits.expand(batch_shape + self.event_shape), self.weight, validate_args=False
        )

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        eta = self.logits + value @ self.coupling.T
        return (value * eta - softplus(eta)).sum(-1)

    @torch.no_grad()
    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        eta = self.logits.expand(shape).clone()
        h = torch.empty_like(eta)
        coupling = self.coupling
        for j in range(shape[-1]):
            h[..., j] = torch.bernoulli(torch.sigmoid(eta[..., j]))
            eta += h[..., j, None] * coupling[:, j]
        return h
