"""Per-instance SVI and semi-amortized VI: λ refined per datum by gradient steps on its ELBO."""

from __future__ import annotations

import torch

from fabula.inference.amortized import Amortized
from fabula.inference.refinement import Refinement


class StochasticVI(Amortized):
    r"""Per-instance stochastic VI: for each batch, :math:`\lambda_0` is the guide's
    :meth:`~fabula.guides.Guide.init_params` (the prior; ``init_scale > 0`` adds Gaussian noise),
    refined by K steps of :class:`~fabula.inference.refinement.Refinement`; the story is then
    updated at :math:`\lambda_K` (held fixed). No encoder is used or trained.

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(
        self, story, guide, refinement: Refinement | None = None, init_scale: float = 0.0, **settings
    ):
        self.refinement = refinement or Refinement()
        self.init_scale = init_scale
        super().__init__(story, guide, **settings)

    def trainable_parameters(self):
        yield from self.story.parameters()

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = self.guide.init_params(batch.size, self.story.device)
        if self.init_scale > 0:
            start = {k: v + self.init_scale * torch.randn_like(v) for k, v in start.items()}
        return self.refinement.run(self.story, self.guide, batch, start)


class SemiAmortized(Amortized):
    r"""Semi-amortized VI (SA-VAE): :math:`\lambda_0 = \mathrm{enc}(x)`, refined by K steps of
    :class:`~fabula.inference.refinement.Refinement`, and the loss taken at :math:`\lambda_K`.
    While gradients are enabled (training) the K steps stay in the autograd graph, so encoder
    and story receive gradients through them (exact Hessian-vector products); under
    ``torch.no_grad`` (evaluation) the refinement is run detached. With K = 0 this is
    :class:`~fabula.inference.Amortized`.

    References: Y. Kim, S. Wiseman, A. Miller, D. Sontag, A. Rush. Semi-Amortized Variational
    Autoencoders. ICML 2018.
    """

    def __init__(self, story, guide, refinement: Refinement | None = None, **settings):
        self.refinement = refinement or Refinement()
        super().__init__(story, guide, **settings)

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = self.guide.local_params(batch)
        return self.refinement.run(
            self.story, self.guide, batch, start, differentiable=torch.is_grad_enabled()
        )
