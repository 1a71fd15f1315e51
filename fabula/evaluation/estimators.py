r"""Estimators of :math:`\log p(x)` per datum, as objects chosen by what a story and an
inference object support, with one spec grammar (``elbo``, ``elbo:S``, ``iw:S``, ``iw-draws:S``, ``exact``,
``left-to-right:R``, ``ais[:RUNS[:STEPS]]``, ``ais-beta[:RUNS[:TEMPERATURES]]``).

* :class:`ELBO`: the evidence lower bound under the inference object's :math:`q_\lambda`;
* :class:`ImportanceWeighted`: the importance-weighted bound with :math:`S` draws of
  :math:`q_\lambda` (Burda et al. 2016), tighter as :math:`S` grows;
* :class:`ImportanceFromDraws`: importance sampling with a proposal fitted to the inference
  object's posterior draws (a sampler's), with its Pareto :math:`\hat k` per datum;
* :class:`Exact`: the story's own :meth:`~fabula.models.capabilities.ExactLikelihood.log_prob`, for stories
  whose marginal is tractable (no latent, or a conjugate one), or the sum over latents that are
  all finite. It needs no guide, so it also scores the story of a sampler.
* :class:`LeftToRight`: a topic story's :math:`\log p(w)` by sequential importance sampling of
  its tokens' topics (Wallach et al. 2009), with no q.
* :class:`AIS` and :class:`TemperedAIS`: an undirected story's :math:`-F(v) - \log \hat Z_D`,
  the log partition function estimated by annealed importance sampling along the document
  length (every length in one annealing) or along the inverse temperature (once per length).

An estimator for another kind of story (AIS for an undirected one, say) is one class with
``check``, ``particles`` and ``log_likelihood``, and one entry of :data:`ESTIMATORS`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from fabula.errors import SettingsError, UsageError
from fabula.evaluation import ais
from fabula.evaluation.bounds import iw_log_likelihood, pareto_khat, proposal_log_weights
from fabula.evaluation.left_to_right import left_to_right
from fabula.inference.kernels import seeded
from fabula.models.capabilities import (
    DirichletTopics,
    ExactLikelihood,
    HiddenMarginal,
    LengthTempered,
    Undirected,
)
from fabula.particles import replay, unsummable, values_trace


@dataclass
class BatchTerms:
    """What :func:`~fabula.evaluation.evaluate` holds of one batch for the estimator: the
    inference object, λ and (with a guide) the reconstruction and total KL averaged over
    :attr:`Estimator.particles` draws; an estimator adds its own per-datum diagnostics
    (``[B]`` each) to ``diagnostics``."""

    inference: object
    batch: object
    params: dict | None = None
    reconstruction: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def story(self):
        return self.inference.story


class Estimator(Protocol):
    r"""An estimate (or lower bound) of :math:`\log p(x)` per datum."""

    name: ClassVar[str]
    samples: int

    particles: int
    """Draws of q per datum in the batch's shared trace (its KL and reconstruction)."""

    def check(self, inference) -> None:
        """Refuse an inference object (or its story) this estimator cannot score, naming what
        to use instead."""

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        """``[B]``: the estimate for each datum of the batch."""


def _refuse_undirected(estimator, inference) -> None:
    if isinstance(inference.story, Undirected):
        raise UsageError(
            f"{type(inference.story).__name__} is undirected: its log p(x) needs the partition function "
            f"log Z_D, which the {estimator.name} estimator does not give; use 'ais' (annealed importance "
            "sampling, ais:RUNS:STEPS)"
        )


def _check_variational(estimator, inference) -> None:
    _refuse_undirected(estimator, inference)
    if inference.source is None:
        exact = (
            " or 'exact' (the story's own likelihood)" if isinstance(inference.story, ExactLikelihood) else ""
        )
        raise UsageError(
            f"the {estimator.name} estimator bounds log p(x) with a variational q and this "
            f"{type(inference).__name__} has none (its source is None); score its draws with "
            f"'iw-draws:S' (importance sampling from a proposal fitted to them){exact}"
        )


def _check_samples(estimator) -> None:
    if not (isinstance(estimator.samples, int) and estimator.samples >= 1):
        raise SettingsError(f"{estimator.name}: samples must be an integer >= 1, got {estimator.samples!r}")


@dataclass(frozen=True)
class ELBO:
    r""":math:`E_q[\log p(x\mid z)] - KL(q\|p)`, the reconstruction averaged over ``samples``
    draws and the KL analytic where ``torch.distributions`` knows it."""

    samples: int = 1
    name: ClassVar[str] = "elbo"

    def __post_init__(self):
        _check_samples(self)

    @property
    def particles(self) -> int:
        return self.samples

    def check(self, inference) -> None:
        _check_variational(self, inference)

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        return terms.reconstruction - terms.kl


@dataclass(frozen=True)
class ImportanceWeighted:
    r""":math:`\log \frac1S \sum_s p(x, z_s) / q(z_s\mid x)`, :math:`z_s \sim q_\lambda`, with
    ``S = samples`` drawn in memory-bounded chunks.

    References: Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    """

    samples: int = 500
    name: ClassVar[str] = "iw"
    particles: ClassVar[int] = 1

    def __post_init__(self):
        _check_samples(self)

    def check(self, inference) -> None:
        _check_variational(self, inference)

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        return iw_log_likelihood(terms.story, terms.inference.guide, terms.batch, self.samples, terms.params)


@dataclass(frozen=True)
class Exact:
    r"""The story's exact :math:`\log p(x)`: its own
    :meth:`~fabula.models.capabilities.ExactLikelihood.log_prob`, or, for a story whose latent
    sites are all finite (a mixture's component), the sum over their joint values
    (:func:`~fabula.particles.replay`, at most :data:`~fabula.particles.MAX_ENUMERATION` per
    datum). It needs no q, so it also scores a sampler's story."""

    name: ClassVar[str] = "exact"
    particles: ClassVar[int] = 1
    samples: ClassVar[int] = 0

    def check(self, inference) -> None:
        _refuse_undirected(self, inference)

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        story = terms.story
        if isinstance(story, ExactLikelihood):
            return story.log_prob(terms.batch)
        reason = unsummable(story, terms.batch)
        if reason is not None:
            raise UsageError(
                f"{type(story).__name__} has no exact log p(x): no log_prob(batch), and {reason}; bound it with "
                "the elbo or iw:S estimator"
            )
        return replay(story, terms.batch, values_trace({}), 1).joint[0]


@dataclass(frozen=True)
class LeftToRight:
    r"""The left-to-right estimate of :math:`\log p(w)` of a story of LDA's form
    (:func:`~fabula.evaluation.left_to_right.left_to_right`, Wallach et al. 2009) with
    ``samples`` particles: a stochastic lower bound that needs no q, so it scores a story fitted
    by any kind (a sampler's, variational Bayes's, an encoder's) the same way. ``seed`` seeds the
    particles (the caller's random stream is left as it was)."""

    samples: int = 20
    seed: int = 0
    name: ClassVar[str] = "left-to-right"
    particles: ClassVar[int] = 1

    def __post_init__(self):
        _check_samples(self)

    def check(self, inference) -> None:
        if not isinstance(inference.story, DirichletTopics):
            raise UsageError(
                f"the left-to-right estimator scores stories of LDA's form (DirichletTopics: alpha and "
                f"topic_word), and {type(inference.story).__name__} is not one; use elbo, iw:S or exact"
            )

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        counts = terms.batch.counts
        with seeded(self.seed + int(terms.batch.index[0]), counts.device):
            return left_to_right(terms.story, counts, self.samples)


@dataclass(frozen=True)
class ImportanceFromDraws:
    r"""Importance sampling of :math:`p(x) = E_r[p(x, z) / r(z)]` with a proposal fitted to the
    inference object's posterior draws of each datum: a multivariate Student-t with ``df``
    degrees of freedom and the draws' mean and covariance (heavier tails than the posterior's,
    so that the weights stay bounded where the fit is close). ``samples`` proposals per datum.

    It scores what a sampler's draws support: a log-likelihood estimate (a stochastic lower
    bound, by Jensen's inequality) whose reliability its per-datum Pareto :math:`\hat k`
    (``khat``) reports: below 0.7 the estimate is trustworthy. Continuous latents only, a
    constrained one fitted in unconstrained space (Pyro's ``biject_to`` of its support, with its
    Jacobian); it needs more draws than latent dimensions.

    References: A. Vehtari, D. Simpson, A. Gelman, Y. Yao, J. Gabry. Pareto Smoothed Importance
    Sampling. JMLR 2024.
    """

    samples: int = 1000
    df: float = 10.0
    name: ClassVar[str] = "iw-draws"
    particles: ClassVar[int] = 1

    def __post_init__(self):
        _check_samples(self)
        if not self.df > 2:
            raise SettingsError(f"iw-draws: df must be > 2 (a finite covariance), got {self.df}")

    def check(self, inference) -> None:
        _refuse_undirected(self, inference)
        if inference.source is not None:
            raise UsageError(
                f"iw-draws scores a sampler's draws and this {type(inference).__name__} has a variational "
                "q; use iw:S, whose proposal is q itself"
            )

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        draws = terms.inference.posterior(terms.batch)
        logw = proposal_log_weights(terms.story, terms.batch, draws, self.samples, self.df)
        terms.diagnostics["khat"] = pareto_khat(logw)
        dtype = next(iter(draws.values())).dtype
        return (torch.logsumexp(logw, 0) - math.log(self.samples)).to(dtype)


@dataclass(frozen=True)
class Annealed:
    r"""What the two annealed estimators share: :math:`\log p(v) = -F(v) - \log \hat Z_D`, with
    :math:`\log \hat Z_D` from ``runs`` runs of annealed importance sampling over ``steps``, and
    the spec ``NAME[:RUNS[:STEPS]]``.

    Per datum it reports ``ais_se``, the standard error of its length's :math:`\log \hat Z_D`,
    and ``ais_ess``, its effective number of runs (near 1: the estimate rests on one run and is
    not to be trusted). For a story with a tractable hidden marginal
    (:class:`~fabula.models.capabilities.HiddenMarginal`) it also reports ``ais_mode_gap``, by
    how much :math:`\log \hat Z_D` falls below the bound :math:`D \max_h g(h)`
    (:func:`~fabula.evaluation.ais.best_hidden_state`, from 64 random states, the batch's
    rounded posteriors and, for a :class:`~fabula.models.capabilities.LengthTempered` story, its
    :func:`~fabula.evaluation.ais.word_states`): above 0, AIS provably missed a mode, and the NLL is low by at least
    that. :math:`\log \hat Z_D` is biased low, so the perplexity is biased optimistic (a
    stochastic lower bound); more steps shrink the bias, more runs the error. The figures are
    kept for the story's current parameters (a fingerprint of its state). ``seed`` seeds the
    runs (the caller's random stream is left as it was).
    """

    runs: int = 100
    steps: int = 100
    seed: int = 0
    name: ClassVar[str]
    particles: ClassVar[int] = 1
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not (isinstance(self.runs, int) and self.runs >= 2):
            raise SettingsError(
                f"{self.name}: runs must be an integer >= 2 (for the standard error), got {self.runs!r}"
            )
        self.check_steps(self.steps)

    @staticmethod
    def check_steps(steps: int) -> None:
        """Refuse a count of steps the path cannot take."""

    @property
    def samples(self) -> int:
        return self.runs

    @property
    def spec(self) -> str:
        """The spec that :func:`parse_estimator` reads back as this estimator."""
        return f"{self.name}:{self.runs}:{self.steps}"

    @classmethod
    def from_spec(cls, spec: str):
        """``"NAME"``, ``"NAME:RUNS"`` or ``"NAME:RUNS:STEPS"``."""
        numbers = spec.split(":")[1:]
        if len(numbers) > 2 or not all(n.isascii() and n.isdigit() for n in numbers):
            raise SettingsError(f"{spec!r}: write {cls.name}, {cls.name}:RUNS or {cls.name}:RUNS:STEPS")
        return cls(*(int(n) for n in numbers))

    def _state(self, story) -> dict:
        """The cache for the story's current parameters (emptied when they change)."""
        digest = hashlib.sha256()
        for tensor in story.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        if self._cache.get("story") != digest.hexdigest():
            self._cache.clear()
            self._cache.update(story=digest.hexdigest())
        return self._cache

    def _maxima(self, story) -> tuple[torch.Tensor, torch.Tensor]:
        """The local maxima of :math:`g` (unique) and their :math:`g`, from 64 random states and,
        for a :class:`~fabula.models.capabilities.LengthTempered` story, its
        :func:`~fabula.evaluation.ais.word_states`; found once for the story's parameters."""
        state = self._state(story)
        if "maxima" not in state:
            generator = torch.Generator().manual_seed(self.seed)
            starts = torch.bernoulli(torch.full((64, story.hidden), 0.5), generator=generator).to(
                story.device
            )
            if isinstance(story, LengthTempered):
                starts = torch.cat([starts.double(), ais.word_states(story)])
            h = torch.unique(ais.local_maxima(story, starts)[0], dim=0)
            state["maxima"] = (h, story.hidden_log_marginal(h, 1.0))
        return state["maxima"]

    def log_likelihood(self, terms: BatchTerms) -> torch.Tensor:
        story, counts = terms.story, terms.batch.counts
        found = self.log_partition(story, counts.sum(-1))
        terms.diagnostics["ais_se"], terms.diagnostics["ais_ess"] = found.se, found.ess
        if isinstance(story, HiddenMarginal):
            posterior = ais.best_hidden_state(story, story.hidden_given_visible(counts).mean.round())
            best = max(posterior, float(self._maxima(story)[1].max()))
            terms.diagnostics["ais_mode_gap"] = (counts.sum(-1).double() * best - found.log_z).clamp(min=0)
        return -story.free_energy(counts, torch.ones((), dtype=torch.float64)) - found.log_z


@dataclass(frozen=True)
class AIS(Annealed):
    r"""An undirected story's :math:`\log p(v) = -F(v) - \log \hat Z_D` with :math:`\log \hat Z_D`
    from annealed importance sampling along the document length
    (:class:`~fabula.evaluation.ais.LengthAnnealing`, for a
    :class:`~fabula.models.capabilities.LengthTempered` story): ``runs`` runs from the uniform
    hidden units at 0 words through every length to the longest document, ``steps`` setting the
    grid (:func:`~fabula.evaluation.ais.length_grid`: ``steps`` sweeps of single-unit Gibbs
    updates per e-fold of length, the estimate read at every integer length). The local maxima of
    :math:`g` that coordinate ascent reaches from the story's
    :func:`~fabula.evaluation.ais.word_states` and 64 random states, with their one-unit
    neighbours, are summed exactly (for at most 62 hidden units) and the runs anneal the rest
    (:class:`~fabula.evaluation.ais.LengthAnnealing`): the narrow modes that dominate long
    documents are not left to the runs to find. One annealing serves every length of an
    evaluation; a longer document continues it. The default for such a story
    (:func:`default_estimator`).
    Diagnostics and caching: :class:`Annealed`.

    References: R. Neal. Annealed Importance Sampling. Statistics and Computing 2001.
    """

    name: ClassVar[str] = "ais"

    @staticmethod
    def check_steps(steps: int) -> None:
        ais.length_grid(steps, 0)

    def check(self, inference) -> None:
        if not isinstance(inference.story, LengthTempered):
            tempered = (
                " (try ais-beta, the temperature path)" if isinstance(inference.story, Undirected) else ""
            )
            raise UsageError(
                f"ais anneals an undirected story along the document length; {type(inference.story).__name__} "
                f"has no replicated-softmax hidden marginal{tempered}; a directed story takes elbo, iw:S or exact"
            )

    def log_partition(self, story, lengths: torch.Tensor) -> ais.LogPartition:
        r""":math:`\log \hat Z_D`, its standard error and effective runs for each entry of
        ``lengths`` (float64)."""
        state = self._state(story)
        if "annealing" not in state:
            modes = self._maxima(story)[0] if story.hidden <= ais.MAX_EXACT_UNITS else None
            state["annealing"] = ais.LengthAnnealing(story, self.runs, self.steps, self.seed, modes)
        found = state["annealing"].log_partition(lengths.round().long())
        return ais.LogPartition(*(v.to(lengths.device) for v in found))


@dataclass(frozen=True)
class TemperedAIS(Annealed):
    r"""An undirected story's (:class:`~fabula.models.capabilities.Undirected`)
    :math:`\log p(v) = -F(v) - \log \hat Z_D`, with :math:`\log \hat Z_D` from annealed importance
    sampling along the inverse temperature (:func:`fabula.evaluation.ais.log_partition`):
    ``runs`` runs from the story's base model (the base-rate model: word frequencies, no weights)
    over ``steps`` inverse temperatures spaced as Salakhutdinov & Murray (2008) space them
    (:func:`~fabula.evaluation.ais.temperatures`), once per distinct length (all of a batch's new
    lengths at once). The defaults, 100 runs and 14,500 temperatures, are theirs (Salakhutdinov &
    Hinton 2009 evaluate the RSM with this AIS). On long documents its runs can miss the modes
    of :math:`p_D` (``ais_mode_gap`` shows it); :class:`AIS` does not.
    Diagnostics and caching: :class:`Annealed`.

    References: R. Salakhutdinov, I. Murray. On the Quantitative Analysis of Deep Belief
    Networks. ICML 2008. R. Salakhutdinov, G. Hinton. Replicated Softmax: an Undirected Topic
    Model. NIPS 2009.
    """

    steps: int = 14_500
    name: ClassVar[str] = "ais-beta"
    check_steps = staticmethod(ais.temperatures)

    def check(self, inference) -> None:
        if not isinstance(inference.story, Undirected):
            raise UsageError(
                f"ais-beta estimates the partition function of an undirected story; "
                f"{type(inference.story).__name__} is directed: use elbo, iw:S or exact"
            )

    def log_partition(self, story, lengths: torch.Tensor) -> ais.LogPartition:
        r""":math:`\log \hat Z_D`, its standard error and effective runs for each entry of
        ``lengths`` (float64)."""
        known = self._state(story).setdefault("values", {})
        wanted = [int(d) for d in lengths.tolist()]
        new = sorted(set(wanted) - set(known))
        if new:
            found = ais.log_partition(story, new, self.runs, ais.temperatures(self.steps), self.seed)
            known.update(zip(new, torch.stack(found, -1).tolist(), strict=True))
        values = torch.tensor([known[d] for d in wanted], dtype=torch.float64, device=lengths.device)
        return ais.LogPartition(*values.unbind(-1))


#: The estimator classes by the name their spec starts with (``iw`` of ``iw:500``).
ESTIMATORS: dict[str, type] = {
    e.name: e for e in (ELBO, ImportanceWeighted, Exact, LeftToRight, ImportanceFromDraws, AIS, TemperedAIS)
}


def parse_estimator(spec: str) -> Estimator:
    """``"elbo"``, ``"elbo:S"``, ``"iw:S"``, ``"iw-draws:S"``, ``"exact"``,
    ``"ais[:RUNS[:STEPS]]"`` or ``"ais-beta[:RUNS[:TEMPERATURES]]"`` -> the estimator object.

    >>> from fabula.evaluation import parse_estimator
    >>> parse_estimator("iw:500"), parse_estimator("elbo"), parse_estimator("exact")
    (ImportanceWeighted(samples=500), ELBO(samples=1), Exact())
    >>> parse_estimator("ais:100:100")
    AIS(runs=100, steps=100, seed=0)
    """
    name, colon, samples = spec.partition(":")
    if name not in ESTIMATORS:
        raise SettingsError(
            f"unknown estimator {spec!r}; choose from elbo, elbo:S, iw:S, iw-draws:S, exact, left-to-right:R, ais:RUNS:STEPS, "
            "ais-beta:RUNS:TEMPERATURES"
        )
    if name in (AIS.name, TemperedAIS.name):
        return ESTIMATORS[name].from_spec(spec)
    if name == Exact.name:
        if colon:
            raise SettingsError(f"{spec!r}: the exact estimator draws no samples (write exact)")
        return Exact()
    if not colon:
        return ESTIMATORS[name]()
    if not samples.isascii() or not samples.isdigit() or int(samples) < 1:
        raise SettingsError(f"{spec!r}: the samples S must be an integer >= 1, e.g. {name}:100")
    return ESTIMATORS[name](int(samples))


def spec_of(estimator: Estimator) -> str:
    """The spec that :func:`parse_estimator` reads back as ``estimator``."""
    if isinstance(estimator, Annealed):
        return estimator.spec
    return estimator.name if estimator.name == Exact.name else f"{estimator.name}:{estimator.samples}"


def default_estimator(story, data=None) -> Estimator:
    """The best figure a story supports without asking: exact where it has one (its own
    likelihood, or, judged on a batch of ``data``, the sum over latents that are all finite), AIS along the
    length for a :class:`~fabula.models.capabilities.LengthTempered` story (the RSM), AIS along
    the temperature for another undirected one, else the ELBO."""
    if isinstance(story, LengthTempered):
        return AIS()
    if isinstance(story, Undirected):
        return TemperedAIS()
    if isinstance(story, ExactLikelihood):
        return Exact()
    if data is not None and len(data):
        if unsummable(story, data.batch(torch.arange(min(len(data), 8)), story.device)) is None:
            return Exact()
    return ELBO()
