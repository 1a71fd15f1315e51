r"""Mean-field variational Bayes for LDA (Blei et al. 2003), batch or online (Hoffman et al. 2010).

The family :math:`q(\theta_d) = \mathrm{Dir}(\gamma_d)`, :math:`q(z_{d,i}) = \mathrm{Cat}(\phi_{d,i})`
and :math:`q(\beta_k) = \mathrm{Dir}(\lambda_k)` has closed-form coordinate updates. For a
document with counts :math:`n_{dv}`, the tokens of one word share :math:`\phi_{dv}`, and

.. math::
    \phi_{dvk} \propto \exp(E_q[\log\theta_{dk}])\, B_{kv}, \qquad
    \gamma_{dk} = \alpha_k + \sum_v n_{dv}\, \phi_{dvk},

iterated to a fixed point (:func:`mean_field`), with :math:`B_{kv} = \exp(E_q[\log\beta_{kv}])`
while the topics are latent and :math:`B = \beta` where they are given. The topics' update is
:math:`\lambda_{kv} = \eta + \sum_d n_{dv}\phi_{dvk}`; online, each batch :math:`S` of a corpus of
:math:`D` documents moves :math:`\lambda` a step :math:`\rho_t = (\tau_0 + t)^{-\kappa}` toward
:math:`\eta + \tfrac{D}{|S|}\sum_{d \in S} n_{dv}\phi_{dvk}`, a natural-gradient step of the ELBO
(:math:`\kappa = 0` and one batch of the whole corpus is Blei et al.'s batch update).

References: D. Blei, A. Ng, M. Jordan. Latent Dirichlet Allocation. JMLR 2003.
M. Hoffman, D. Blei, F. Bach. Online Learning for Latent Dirichlet Allocation. NIPS 2010.
"""

from __future__ import annotations

import torch

from fabula.data.corpus import DataParallel
from fabula.errors import SettingsError
from fabula.guides.simplex import DirichletGuide
from fabula.inference.base import Inference
from fabula.inference.sources import Source
from fabula.inference.trainer import Trainer, fit
from fabula.models.capabilities import DirichletTopics
from fabula.settings import COUNT, POSITIVE, Range


def refuse_untopical(story, kind: str) -> None:
    """Refuse a story that is not of LDA's form, naming what ``kind`` needs."""
    if not isinstance(story, DirichletTopics):
        raise SettingsError(
            f"{kind} needs a story of LDA's form (the DirichletTopics capability: alpha, eta, "
            f"topic_word, set_topics); {type(story).__name__} is not one"
        )


def expected_log_simplex(concentration: torch.Tensor) -> torch.Tensor:
    r""":math:`E[\log\theta_k] = \psi(\gamma_k) - \psi(\sum_j \gamma_j)` under :math:`\mathrm{Dir}(\gamma)`."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


@torch.no_grad()
def mean_field(
    counts: torch.Tensor,
    alpha: torch.Tensor,
    topics: torch.Tensor,
    iterations: int = 100,
    tolerance: float = 1e-3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""The fixed point of :math:`\gamma` for documents ``counts`` (``[B, V]``) under topic weights
    ``topics`` :math:`B` (``[K, V]``): at most ``iterations`` updates, stopping once the mean
    absolute change of :math:`\gamma` falls below ``tolerance``. Returns :math:`\gamma` (``[B, K]``),
    :math:`\exp E_q[\log\theta]` and the normaliser :math:`\sum_k \exp E_q[\log\theta_k] B_{kv}`
    (``[B, V]``) at it."""
    gamma = alpha + (counts.sum(-1, keepdim=True) / alpha.numel()).expand(-1, alpha.numel())
    tiny = torch.finfo(counts.dtype).tiny
    for _ in range(iterations):
        weights = expected_log_simplex(gamma).exp()
        norm = weights @ topics + tiny
        new = alpha + weights * ((counts / norm) @ topics.T)
        change = float((new - gamma).abs().mean()) if len(gamma) else 0.0
        gamma = new
        if change < tolerance:
            break
    weights = expected_log_simplex(gamma).exp()
    return gamma, weights, weights @ topics + tiny


class MeanFieldTopics(Source):
    r"""The λ of a :class:`~fabula.guides.DirichletGuide`: each document's :math:`\gamma_d` at the
    fixed point of :func:`mean_field` under the story's topics :math:`\beta` (held fixed). It is a
    proposal fitted per document, for the ELBO and importance-weighted estimators of a story whose
    topics were fitted without an encoder."""

    def __init__(self, story, guide: DirichletGuide, iterations: int = 100, tolerance: float = 1e-3):
        super().__init__(guide)
        self.story, self.iterations, self.tolerance = story, iterations, tolerance

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        beta = self.story.topic_word().detach()
        gamma, _, _ = mean_field(batch.counts, self.story.alpha, beta, self.iterations, self.tolerance)
        return {"concentration": gamma}


class TopicCountsTraining(Inference):
    r"""What the kinds that fit an LDA-form story without gradients share: a λ source fitting a
    Dirichlet :math:`q(\theta)` per document to the story's topics (:class:`MeanFieldTopics`), no
    optimizer (an empty :class:`~fabula.inference.trainer.Trainer`), and :meth:`fit`."""

    def __init__(self, story, kind: str, iterations: int = 100, tolerance: float = 1e-3):
        refuse_untopical(story, kind)
        COUNT.check("iterations", iterations, int)
        POSITIVE.check("tolerance", tolerance)
        guide = DirichletGuide(story.alpha.numel())
        super().__init__(story, MeanFieldTopics(story, guide, iterations, tolerance))
        self.trainer = Trainer({})
        self.num_steps = 0

    def end_epoch(self) -> dict[str, float]:
        return {}

    def fit(self, data, epochs: int = 1, batch_size: int = 64, seed: int = 0, **settings) -> list[dict]:
        """Train on ``data`` with a progress bar per epoch (:func:`~fabula.inference.trainer.fit`)."""
        return fit(self, data, epochs, batch_size, seed, **settings)


class VariationalBayes(TopicCountsTraining):
    r"""Trains an LDA-form story (:class:`~fabula.models.capabilities.DirichletTopics`) by mean-field
    variational Bayes, one online step per batch (module docstring). Its state is
    :math:`\lambda` (``[K, V]``, started at Gamma(100, 1/100) draws, mean 1, as Hoffman et al.) and the step count; after each step the story's topics are :math:`E_q[\beta_k] =
    \lambda_k / \sum_v \lambda_{kv}`. A step reports ``loss``,
    :math:`-\sum_v n_{dv} \log \sum_k \exp(E\log\theta_{dk}) B_{kv}` per token, the bound's
    expected log-likelihood term at the fixed point. Its λ source fits :math:`\gamma_d` to the
    story's topics (:class:`MeanFieldTopics`)."""

    def __init__(
        self, story, kappa: float = 0.7, tau0: float = 10.0, iterations: int = 100, tolerance: float = 1e-3
    ):
        super().__init__(story, "variational Bayes", iterations, tolerance)
        Range(at_least=0, at_most=1).check("kappa", kappa)
        Range(at_least=0).check("tau0", tau0)
        self.kappa, self.tau0 = kappa, tau0
        self.topics: torch.Tensor | None = None
        self.num_data: int | None = None

    def begin(self, data) -> None:
        """Start :math:`\\lambda` unless a checkpoint gave it; read the corpus size :math:`D`."""
        if isinstance(data, DataParallel):
            raise SettingsError("variational Bayes keeps one lambda in one process: run it without torchrun")
        self.num_data = len(data)
        if self.topics is None:
            shape = (self.story.alpha.numel(), self.story.vocab_size)
            gamma = torch.distributions.Gamma(torch.full(shape, 100.0), torch.full(shape, 100.0))
            self.topics = gamma.sample().to(self.story.device)
        self.story.set_topics(self.topics / self.topics.sum(-1, keepdim=True))

    def step(self, batch) -> dict[str, float]:
        weights = expected_log_simplex(self.topics).exp()
        source = self.source
        _, theta, norm = mean_field(
            batch.counts, self.story.alpha, weights, source.iterations, source.tolerance
        )
        statistics = theta.T @ (batch.counts / norm) * weights
        rho = (self.tau0 + self.num_steps + 1) ** -self.kappa
        target = self.story.eta + self.num_data / batch.size * statistics
        self.topics = (1 - rho) * self.topics + rho * target
        self.story.set_topics(self.topics / self.topics.sum(-1, keepdim=True))
        self.num_steps += 1
        return {"loss": float(-(batch.counts * norm.log()).sum() / batch.counts.sum()), "rho": rho}

    def state_dict(self) -> dict:
        return {"topics": self.topics, "num_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        self.topics, self.num_steps = state["topics"], state["num_steps"]
