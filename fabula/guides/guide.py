"""The guide contract: per-datum variational parameters and a Pyro guide that uses them."""

from __future__ import annotations

import torch
from pyro.nn import PyroModule

from fabula.rebuild import Rebuildable


class Guide(Rebuildable, PyroModule):
    """A variational family :math:`q_\\lambda(z \\mid x)` for a story's local latents.

    * :meth:`local_params` returns the per-datum variational parameters :math:`\\lambda`
      (unconstrained tensors whose first dimension is the batch), e.g. ``{"loc", "log_scale"}``;
      an amortized guide computes them with an encoder, :math:`\\lambda = \\mathrm{enc}(x)`.
    * :meth:`forward` is the Pyro guide: it samples every latent site of the story from
      :math:`q_\\lambda` inside the ``"data"`` plate, with ``params`` when given, else
      :meth:`local_params`. Inference objects that refine or optimise :math:`\\lambda` per
      datum (per-instance SVI, SA-VAE) pass their own ``params``.

    Discrete sites are sampled with ``infer={"enumerate": "parallel"}`` so that
    ``TraceEnum_ELBO`` sums them out exactly; their logits are part of :math:`\\lambda` too.
    """

    def __init__(self):
        super().__init__(name="guide")

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def init_params(self, num: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        r"""Non-amortized starting values of :math:`\lambda` for ``num`` data (the prior where possible)."""
        raise NotImplementedError

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        raise NotImplementedError
