"""What a story (or guide) can do beyond the contract, as small protocols checked with
``isinstance`` -- never sniffed attribute by attribute."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


def declares(cls: type, protocol: type) -> bool:
    """Whether class ``cls`` defines every method of ``protocol``: a check before any instance
    exists (``issubclass`` refuses protocols with data members, which an instance sets)."""
    methods = [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]
    return all(callable(getattr(cls, name, None)) for name in methods)


@runtime_checkable
class GeneratesSentences(Protocol):
    """A sentence story: an LSTM ``decoder`` conditioned on ``code(latents)``, and prior draws."""

    decoder: torch.nn.Module
    code_sites: tuple[str, ...]

    def code(self, latents: dict[str, torch.Tensor]) -> torch.Tensor | None: ...

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class ArrangesOutput(Protocol):
    """A story whose output layer is arranged by the training corpus's word counts before
    training (frequency classes, adaptive clusters, a sampling proposal: :mod:`fabula.nn.output`)."""

    def fit_output(self, corpus) -> None: ...


@runtime_checkable
class GeneratesDocuments(Protocol):
    """A bag-of-words story: word counts ``[N, vocab_size]`` of documents of the given lengths,
    with ``z`` drawn from its prior unless given."""

    vocab_size: int

    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Dreams(Protocol):
    """A story that dreams a batch of its own data type: ``(latents, batch)`` with the latents
    drawn from its prior and the observation from them, shaped like the given batch (the sleep
    phase of wake-sleep)."""

    def dream(self, batch) -> tuple[dict[str, torch.Tensor], object]: ...


@runtime_checkable
class HasTopics(Protocol):
    """A bag-of-words story whose latent dimensions (topics) have word profiles: ``topic_words``
    ranks each topic's words, most weighted first, and ``topics`` names that ranking's rows with
    the vocabulary's ``words`` (what ``fabula topics`` prints and
    :func:`~fabula.evaluation.npmi` scores)."""

    def topic_words(self, k: int = 10) -> torch.Tensor:
        """``[K, k]`` long: the ids of each topic's ``k`` most weighted words, best first."""
        ...

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The words of :meth:`topic_words`' rows."""
        ...


@runtime_checkable
class HasComponents(Protocol):
    """A mixture story: pairs of a component ``c_m`` and a Gaussian ``z_m | c_m`` with global
    ``component_means`` / ``component_log_scales`` (``[M, K, D]``) and prior ``mixture_logits``."""

    component_means: torch.Tensor
    component_log_scales: torch.Tensor
    mixture_logits: torch.Tensor

    def generate_component(self, m: int, k: int, num: int) -> torch.Tensor: ...


@runtime_checkable
class ExactLikelihood(Protocol):
    r"""A story whose marginal :math:`\log p(x)` of the observation is tractable: no latent, or a
    conjugate one (scored by :class:`~fabula.evaluation.estimators.Exact`)."""

    def log_prob(self, batch) -> torch.Tensor:
        """``[B]``: the exact log-probability of each datum's observation."""
        ...


@runtime_checkable
class HasPosteriorMean(Protocol):
    """A guide that can say the mean of each continuous site under :math:`q_\\lambda`, concatenated."""

    def posterior_mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor: ...


@runtime_checkable
class Undirected(Protocol):
    r"""An undirected story: an energy over observed counts :math:`v` (documents of :math:`D` tokens)
    and binary hidden units :math:`h`, with :math:`\log p(v) = -F(v) - \log Z_D` and exact Gibbs
    conditionals. Each method takes an inverse temperature :math:`\beta \in [0, 1]` of a tempered
    family :math:`p_\beta \propto p_0^{1-\beta} p^\beta` from a tractable base (:math:`\beta = 0`,
    partition function ``base_log_partition``) to the story (:math:`\beta = 1`), along which
    :math:`\log Z_D` is estimated by annealing (:class:`~fabula.evaluation.estimators.AIS`)."""

    vocab_size: int

    def free_energy(self, counts: torch.Tensor, beta: float | torch.Tensor = 1.0) -> torch.Tensor: ...

    def hidden_given_visible(
        self, counts: torch.Tensor, beta: float = 1.0
    ) -> torch.distributions.Distribution: ...

    def visible_given_hidden(
        self, h: torch.Tensor, lengths: torch.Tensor, beta: float = 1.0
    ) -> torch.distributions.Distribution: ...

    def base_log_partition(self, lengths: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HiddenMarginal(Protocol):
    r"""An undirected story whose ``hidden`` binary units have a tractable unnormalised marginal
    :math:`\log \tilde p_D(h)` (the visible units summed out), so that
    :math:`\log Z_D \ge \max_h \log \tilde p_D(h)`: a check of an estimate of :math:`\log Z_D`."""

    hidden: int

    def hidden_log_marginal(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class LengthTempered(Protocol):
    r"""An undirected story whose ``hidden`` units' unnormalised marginal is a replicated softmax,
    exponential in the document length :math:`D`:

    .. math:: \log \tilde p_D(h) = D\, g(h), \qquad g(h) = a \cdot h + \log \sum_k e^{b_k + (W^\top h)_k},

    so that :math:`p_t(h) \propto e^{t g(h)}`, :math:`t \ge 0`, runs from the uniform
    :math:`p_0` (:math:`Z_0 = 2^F`) through every length: the path along which
    :class:`~fabula.evaluation.estimators.AIS` anneals. ``length_potential`` returns
    :math:`(a, b, W)`, shapes ``[F]``, ``[V]``, ``[F, V]``."""

    hidden: int

    def length_potential(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class DirichletTopics(Protocol):
    r"""A topic story of LDA's form: :math:`\theta_d \sim \mathrm{Dir}(\alpha)` (``alpha``,
    ``[K]``), each token's topic :math:`z \sim \mathrm{Cat}(\theta_d)` and word
    :math:`w \sim \mathrm{Cat}(\beta_z)`, with ``topic_word()`` :math:`\beta` (``[K, V]``) and a
    symmetric Dirichlet(``eta``) prior on its rows for the kinds that treat them as latent: what
    collapsed Gibbs sampling, variational Bayes and the left-to-right estimator need."""

    alpha: torch.Tensor
    eta: float
    vocab_size: int

    def topic_word(self) -> torch.Tensor: ...

    def set_topics(self, beta: torch.Tensor) -> None: ...
