"""Inference objects that refine λ per datum by gradient steps on its ELBO: per-instance SVI,
VAE+SVI, semi-amortized VI, and test-time refinement of any inference object."""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from fabula.evaluation.bounds import trace_guide
from fabula.inference.amortized import Amortized
from fabula.inference.base import Inference
from fabula.inference.refinement import Refinement, negative_elbo


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
        if self.learn_story:
            yield from self.story.parameters()

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = self.guide.init_params(batch.size, self.story.device)
        if self.init_scale > 0:
            start = {k: v + self.init_scale * torch.randn_like(v) for k, v in start.items()}
        return self.refinement.run(self.story, self.guide, batch, start)


class SemiAmortized(Amortized):
    r"""Semi-amortized VI (SA-VAE): :math:`\lambda_0 = \mathrm{enc}(x)`, refined by K steps of
    :class:`~fabula.inference.refinement.Refinement`, and the loss taken at :math:`\lambda_K`.
    While gradients are enabled (training), encoder and story receive gradients through the K
    steps (exact or finite-difference Hessian-vector products, as the refinement's ``hvp``); under
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


class AmortizedSVI(Amortized):
    r"""Amortized VI followed by per-datum refinement (VAE+SVI): :math:`\lambda_0 = \mathrm{enc}(x)`,
    :math:`\lambda_K` = K steps of :class:`~fabula.inference.refinement.Refinement` from a
    detached :math:`\lambda_0`; the story is updated at :math:`\lambda_K` (held fixed) and the
    encoder by one of two rules:

    * ``variant="krishnan"``: the ELBO at :math:`\lambda_0` (Krishnan et al. 2018);
    * ``variant="hjelm"``: :math:`KL(q_{\lambda_0} \| q_{\lambda_K})` with :math:`\lambda_K`
      fixed (Hjelm et al. 2016).

    Story and guide have separate optimizers of the same kind; :meth:`local_params` (used by
    evaluation) returns :math:`\lambda_K`.

    References:
      R. Krishnan, D. Liang, M. Hoffman. On the challenges of learning with inference networks on
      sparse, high-dimensional data. AISTATS 2018.
      D. Hjelm et al. Iterative Refinement of the Approximate Posterior for Directed Belief
      Networks. NeurIPS 2016.
    """

    VARIANTS = ("krishnan", "hjelm")

    def __init__(
        self, story, guide, refinement: Refinement | None = None, variant: str = "krishnan", **settings
    ):
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        self.refinement = refinement or Refinement()
        self.variant = variant
        super().__init__(story, guide, **settings)
        self.split_optimizers()

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = {k: v.detach() for k, v in self.guide.local_params(batch).items()}
        return self.refinement.run(self.story, self.guide, batch, start)

    def step(self, batch) -> dict[str, float]:
        beta = self.annealing(self.num_steps)
        value = self.descend(self.loss(batch), self.story_params, self.story_optimizer)
        start = self.guide.local_params(batch)
        if self.variant == "krishnan":
            encoder_loss = negative_elbo(self.story, self.guide, batch, start) / batch.size
        else:
            refined = self.local_params(batch)
            q0 = trace_guide(self.guide, batch, 1, start)
            qk = trace_guide(self.guide, batch, 1, refined)
            encoder_loss = (
                sum(
                    kl_divergence(q0.nodes[s]["fn"], qk.nodes[s]["fn"]).sum() for s in self.story.latent_sites
                )
                / batch.size
            )
        self.descend(encoder_loss, self.guide_params, self.guide_optimizer)
        self.num_steps += 1
        return {"loss": value, "beta": beta}

    def state_dict(self) -> dict:
        return {
            "num_steps": self.num_steps,
            "story_optimizer": self.story_optimizer.state_dict(),
            "guide_optimizer": self.guide_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.num_steps = int(state["num_steps"])
        self.story_optimizer.load_state_dict(state["story_optimizer"])
        self.guide_optimizer.load_state_dict(state["guide_optimizer"])


class Refined(Inference):
    """Test-time refinement of any inference object: λ = K refinement steps from the λ it
    would use. For evaluation (``step`` refuses); story and guide are the wrapped object's."""

    def __init__(self, inference, refinement: Refinement):
        super().__init__(inference.story, inference.guide)
        self.inner, self.refinement = inference, refinement

    def step(self, batch):
        raise NotImplementedError("Refined is for evaluation; train the wrapped inference object")

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = {k: v.detach() for k, v in self.inner.local_params(batch).items()}
        return self.refinement.run(self.story, self.guide, batch, start)
