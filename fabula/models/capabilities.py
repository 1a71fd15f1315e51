"""What a story (or guide) can do beyond the contract, as small protocols checked with
``isinstance`` -- never sniffed attribute by attribute."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class GeneratesSentences(Protocol):
    """A sentence story: an LSTM ``decoder`` conditioned on ``code(latents)``, and prior draws."""

    decoder: torch.nn.Module
    code_sites: tuple[str, ...]

    def code(self, latents: dict[str, torch.Tensor]) -> torch.Tensor | None: ...

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class GeneratesDocuments(Protocol):
    """A bag-of-words story: word counts ``[N, vocab_size]`` of documents of the given lengths,
    with ``z`` drawn from its prior unless given."""

    vocab_size: int

    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class HasTopics(Protocol):
    """A bag-of-words story whose latent dimensions have word profiles."""

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]: ...


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
