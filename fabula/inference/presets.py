"""The inference algorithms of the literature as compositions of a λ source and an update policy.

Each preset is a :class:`~fabula.inference.VariationalInference` with its source (and policy)
filled in; every other setting (objective, annealing, trainer) passes through.
"""

from __future__ import annotations

from fabula.inference.base import Inference
from fabula.inference.refinement import Refinement
from fabula.inference.sources import Encoded, FromPrior, Refined, Tabulated
from fabula.inference.updates import StoryThenGuide
from fabula.inference.variational import VariationalInference


class Amortized(VariationalInference):
    r"""Amortized VI: :math:`\lambda = \mathrm{enc}(x)`, story and encoder trained jointly (the VAE).

    A tiny NVDM stepped on one batch under a KL warm-up over 8 steps, then fitted for two epochs:

    >>> import torch
    >>> from fabula.data import synthetic_nvdm_corpus
    >>> from fabula.guides import NormalGuide
    >>> from fabula.inference import Amortized
    >>> from fabula.inference.annealing import Linear
    >>> from fabula.models import NVDM
    >>> _ = torch.manual_seed(0)
    >>> data, _ = synthetic_nvdm_corpus(num_train=64, num_test=16, vocab_size=40, latent_dim=3, mean_length=30)
    >>> story, guide = NVDM(vocab_size=40, latent_dim=4), NormalGuide(40, 4, hidden=[16])
    >>> vi = Amortized(story, guide, optim_args={"lr": 1e-2}, annealing=Linear(8))
    >>> batch = data["train"].batch(torch.arange(16))
    >>> metrics = vi.step(batch)  # the loss per datum and the step's KL weight
    >>> sorted(metrics), metrics["beta"], vi.step(batch)["beta"]
    (['beta', 'loss'], 0.0, 0.125)
    >>> history = vi.fit(data["train"], epochs=2, batch_size=16, progress=False)
    >>> [epoch["epoch"] for epoch in history], vi.num_steps
    ([1, 2], 10)
    >>> history[-1]["loss"] < history[0]["loss"]
    True
    >>> vi.posterior(batch, 10)["z"].shape  # 10 draws of q(z | x) per document
    torch.Size([10, 16, 4])
    """

    def __init__(self, story, guide, **settings):
        super().__init__(story, Encoded(guide), **settings)


class NonAmortized(VariationalInference):
    r"""A table of :math:`\lambda_d` per training datum, learnt jointly with the story. With a
    momentum optimizer (the default Adam) rows outside the batch keep moving on their momentum;
    ``optimizer="sgd"`` confines updates to the batch's rows.

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(self, story, guide, num_data: int, **settings):
        super().__init__(story, Tabulated(guide, num_data, story.device), **settings)


class StochasticVI(VariationalInference):
    r"""Per-instance SVI: :math:`\lambda_0` the prior (plus noise of ``init_scale``), refined by K
    steps; the story is updated at :math:`\lambda_K`. No encoder is used or trained.

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(
        self, story, guide, refinement: Refinement | None = None, init_scale: float = 0.0, **settings
    ):
        start = FromPrior(story, guide, init_scale)
        source = Refined(story, start, refinement or Refinement(), settings.get("objective"))
        super().__init__(story, source, **settings)


class AmortizedSVI(VariationalInference):
    r"""VAE+SVI: :math:`\lambda_K` = K steps from a detached :math:`\mathrm{enc}(x)`; the story
    steps at :math:`\lambda_K`, the encoder by ``variant`` (:class:`~fabula.inference.updates.StoryThenGuide`)."""

    def __init__(
        self, story, guide, refinement: Refinement | None = None, variant: str = "krishnan", **settings
    ):
        source = Refined(story, Encoded(guide), refinement or Refinement(), settings.get("objective"))
        super().__init__(story, source, updates=StoryThenGuide(variant), **settings)


class SemiAmortized(VariationalInference):
    r"""SA-VAE: :math:`\lambda_0 = \mathrm{enc}(x)` refined by K steps, the loss taken at
    :math:`\lambda_K` and differentiated through the steps (exact or finite-difference
    Hessian-vector products, as the refinement's ``hvp``). With K = 0 this is :class:`Amortized`.

    References: Y. Kim, S. Wiseman, A. Miller, D. Sontag, A. Rush. Semi-Amortized Variational
    Autoencoders. ICML 2018.
    """

    def __init__(self, story, guide, refinement: Refinement | None = None, **settings):
        objective = settings.get("objective")
        source = Refined(story, Encoded(guide), refinement or Refinement(), objective, differentiable=True)
        super().__init__(story, source, **settings)


def refined(inference: Inference, refinement: Refinement) -> Inference:
    """Test-time refinement of a trained ``inference``: λ = K detached steps from the λ it would
    use, on its bound. For evaluation and diagnostics; it does not train."""
    objective = inference.objective if isinstance(inference, VariationalInference) else None
    return Inference(inference.story, Refined(inference.story, inference.source, refinement, objective))
