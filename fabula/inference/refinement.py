r"""Gradient ascent on per-datum variational parameters: the inner loop of per-instance SVI
and of semi-amortized VI.

.. math::
    v_{k+1} = \mu\, v_k + \nabla_\lambda \mathrm{ELBO}(\lambda_k), \qquad
    \lambda_{k+1} = \lambda_k + \alpha\, \mathrm{clip}(v_{k+1})

(SGD with momentum :math:`\mu` and step size :math:`\alpha`, gradients clipped per datum to
norm ``clip_norm``). The ELBO is Pyro's ``TraceMeanField_ELBO`` of the story and the guide
run at :math:`\lambda_k`; because the data are independent, the gradient of the batch's ELBO
with respect to datum ``b``'s :math:`\lambda_b` is that datum's own gradient. With
``differentiable=True`` every step stays in the autograd graph (``create_graph``), so the
result can be differentiated with respect to :math:`\lambda_0` and the story's parameters
through all K steps, with exact Hessian-vector products (Kim et al. 2018). Pyro has no such
unrolled optimiser; it is written here.

References:
  M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
  Y. Kim, S. Wiseman, A. Miller, D. Sontag, A. Rush. Semi-Amortized Variational Autoencoders. ICML 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pyro.infer import TraceMeanField_ELBO

_ELBO = TraceMeanField_ELBO()


def negative_elbo(story, guide, batch, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's summed negative ELBO with the guide at ``params`` (one reparameterised draw)."""
    return _ELBO.differentiable_loss(story.model, lambda b: guide(b, params), batch)


@dataclass(frozen=True)
class Refinement:
    """Settings of the inner loop: ``steps`` (K), ``lr`` (α), ``momentum`` (μ), ``clip_norm``."""

    steps: int = 20
    lr: float = 1.0
    momentum: float = 0.5
    clip_norm: float | None = 5.0

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"bad refinement settings {self}")

    def run(self, story, guide, batch, params: dict[str, torch.Tensor], differentiable: bool = False):
        """λ_K from λ_0 = ``params``. Without ``differentiable`` the result is detached.
        Runs with gradients enabled even inside ``torch.no_grad`` (evaluation)."""
        with torch.enable_grad():
            return self._run(story, guide, batch, params, differentiable)

    def _run(self, story, guide, batch, params, differentiable):
        if not params:  # a story without latents has nothing to refine
            return params
        lam = {k: v if differentiable else v.detach().requires_grad_() for k, v in params.items()}
        velocity = {k: torch.zeros_like(v) for k, v in lam.items()}
        for _ in range(self.steps):
            loss = negative_elbo(story, guide, batch, lam)
            grads = torch.autograd.grad(loss, list(lam.values()), create_graph=differentiable)
            grads = dict(zip(lam, grads, strict=True))
            if self.clip_norm is not None:
                norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))  # per datum
                factor = (self.clip_norm / (norm + 1e-12)).clamp(max=1.0)
                grads = {k: g * factor.view(-1, *[1] * (g.dim() - 1)) for k, g in grads.items()}
            velocity = {k: self.momentum * velocity[k] - grads[k] for k in lam}
            lam = {k: lam[k] + self.lr * velocity[k] for k in lam}
            if not differentiable:
                lam = {k: v.detach().requires_grad_() for k, v in lam.items()}
        return lam if differentiable else {k: v.detach() for k, v in lam.items()}
