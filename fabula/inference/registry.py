"""One registry of inference kinds and one spec grammar, for ``fabula train --inference``,
``fabula compare``, ``fabula diagnose`` and the tests.

A spec is ``NAME`` or ``NAME:K`` (K: what the kind counts, e.g. refinement or Gibbs steps); each name
means one thing everywhere. A kind is built from a :class:`Setup` (story, guide, objective,
trainer settings, data); the built object records its spec, and a run's saved configuration
rebuilds it as the kind that was trained. A new kind is one :func:`register` call, e.g. from
its own module::

    register(InferenceKind("my-vi", "my inference", lambda setup, k: MyInference(setup.story, setup.guide)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fabula.errors import SettingsError, UsageError
from fabula.inference.annealing import FORMS, parse_schedule
from fabula.inference.base import Inference
from fabula.inference.contrastive import contrastive
from fabula.inference.kernels import BinaryGibbs
from fabula.inference.mcmc import MCMC
from fabula.inference.nvil import NVIL
from fabula.inference.presets import (
    Amortized,
    AmortizedSVI,
    SemiAmortized,
    StochasticVI,
    refined,
)
from fabula.inference.refinement import Refinement
from fabula.inference.updates import Aggressive
from fabula.inference.wake_sleep import ReweightedWakeSleep, WakeSleep
from fabula.settings import NONNEGATIVE, POSITIVE, PROBABILITY, check_ranges, setting


@dataclass
class Setup:
    """What an inference kind is built from.

    :param objective: the story's training objective (``None``: the default ELBO).
    :param training: settings of :class:`~fabula.inference.VariationalInference` (annealing,
        word dropout, optimizer, clip norm, learning-rate schedule, ``learn_story``).
    :param refinement: settings of :class:`~fabula.inference.Refinement` but its steps.
    :param data: the splits (kinds that need the training data or a validation split).
    :param trained: the trained inference object of a run (test-time kinds refine its λ).
    :param sampler: settings of :class:`~fabula.inference.MCMC`.
    """

    story: object
    guide: object
    objective: object = None
    training: dict = field(default_factory=dict)
    refinement: dict = field(default_factory=dict)
    data: dict | None = None
    batch_size: int = 64
    seed: int = 0
    trained: Inference | None = None
    sampler: dict = field(default_factory=dict)

    def split(self, name: str, kind: str):
        if not self.data or name not in self.data:
            have = sorted(self.data or {})
            raise SettingsError(f"inference {kind!r} needs a {name!r} split; the data has {have}")
        return self.data[name]

    def variational(self) -> dict:
        """The settings every variational kind passes on."""
        return {"objective": self.objective, **self.training}


@dataclass(frozen=True)
class InferenceKind:
    """A registered kind: ``build(setup, steps)`` makes the object (``steps`` is K of
    ``NAME:K``, ``None`` for kinds without steps); ``trains``: whether it fits a story."""

    name: str
    summary: str
    build: Callable[[Setup, int | None], Inference]
    steps: str = ""
    """What K of ``NAME:K`` counts (e.g. ``"refinement steps"``); empty for kinds without K."""
    trains: bool = True

    @property
    def takes_steps(self) -> bool:
        return bool(self.steps)

    def usage(self) -> str:
        return f"{self.name}:K" if self.takes_steps else self.name


KINDS: dict[str, InferenceKind] = {}


def register(kind: InferenceKind) -> InferenceKind:
    """Add ``kind`` to the registry (its name must be new)."""
    if kind.name in KINDS:
        raise SettingsError(f"inference kind {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def parse(spec: str) -> tuple[InferenceKind, int | None]:
    """``"NAME"`` or ``"NAME:K"`` -> (kind, K)."""
    name, colon, steps = spec.partition(":")
    if name not in KINDS:
        raise SettingsError(f"unknown inference {spec!r}; choose from {', '.join(specs())}")
    kind = KINDS[name]
    if not kind.takes_steps:
        if colon:
            raise SettingsError(f"{spec!r}: inference {name!r} takes no steps (write {name})")
        return kind, None
    if not steps.isdigit() or int(steps) < 1:
        raise SettingsError(f"{spec!r}: give the {kind.steps} K >= 1, e.g. {name}:20")
    return kind, int(steps)


def specs(trains: bool | None = None) -> list[str]:
    """The spec forms of the registered kinds (only those that train, or do not, if given)."""
    return [k.usage() for k in KINDS.values() if trains is None or k.trains == trains]


def build(spec: str, setup: Setup) -> Inference:
    """The inference object of ``spec`` for ``setup``, recording its spec."""
    kind, steps = parse(spec)
    inference = kind.build(setup, steps)
    inference.spec = spec
    return inference


def trainable(spec: str) -> InferenceKind:
    """The kind of ``spec``, refusing kinds that do not train."""
    kind, _ = parse(spec)
    if not kind.trains:
        raise UsageError(
            f"inference {spec!r} does not train a story; train with one of {', '.join(specs(trains=True))}"
        )
    return kind


def _refinement(setup: Setup, steps: int, **extra) -> Refinement:
    return Refinement(steps=steps, **{**setup.refinement, **extra})


def _refining(preset, **extra):
    """The builder of a preset that takes a :class:`~fabula.inference.Refinement` of K steps."""
    return lambda s, k: preset(s.story, s.guide, _refinement(s, k, **extra), **s.variational())


def _aggressive(setup: Setup, _):
    updates = Aggressive(
        setup.split("valid", "aggressive"),
        setup.batch_size,
        seed=setup.seed,
    )
    return Amortized(setup.story, setup.guide, updates=updates, **setup.variational())


def _without_nuts(sampler: dict) -> dict:
    """The sampler settings but those that choose the NUTS kernel (``backend``, ...)."""
    return {k: v for k, v in sampler.items() if k not in ("backend", "target_accept", "max_tree_depth")}


def _refine(setup: Setup, steps: int):
    trained = setup.trained or Amortized(setup.story, setup.guide, **setup.variational())
    return refined(trained, _refinement(setup, steps))


for _kind in (
    InferenceKind(
        "vae",
        "amortized VI: lambda = enc(x), story and encoder trained jointly",
        lambda s, _: Amortized(s.story, s.guide, **s.variational()),
    ),
    InferenceKind(
        "svi",
        "per-instance SVI: K refinement steps from the prior; no encoder",
        _refining(StochasticVI),
        steps="refinement steps",
    ),
    InferenceKind(
        "vae+svi",
        "VAE+SVI: K steps from a detached enc(x); story at lambda_K, encoder on its own ELBO",
        _refining(AmortizedSVI),
        steps="refinement steps",
    ),
    InferenceKind(
        "sa-vae",
        "SA-VAE: K steps from enc(x), differentiated through (exact Hessian-vector products)",
        _refining(SemiAmortized),
        steps="refinement steps",
    ),
    InferenceKind(
        "sa-vae-fd",
        "SA-VAE with finite-difference Hessian-vector products",
        _refining(SemiAmortized, hvp="finite-difference"),
        steps="refinement steps",
    ),
    InferenceKind(
        "aggressive",
        "He et al.'s aggressive encoder training until the validation MI stops rising",
        _aggressive,
    ),
    InferenceKind(
        "refine",
        "test-time refinement: K detached steps from a trained object's lambda (does not train)",
        _refine,
        steps="refinement steps",
        trains=False,
    ),
    InferenceKind(
        "nuts",
        "MCMC: NUTS over the local latents, the story fixed (does not train)",
        lambda s, _: MCMC(s.story, s.guide, **s.sampler),
        trains=False,
    ),
    InferenceKind(
        "gibbs",
        "MCMC: single-site Gibbs sweeps over binary local latents (sbn), the story fixed (does not train)",
        lambda s, _: MCMC(s.story, s.guide, kernel=BinaryGibbs(), **_without_nuts(s.sampler)),
        trains=False,
    ),
):
    register(_kind)


def _nvil(setup: Setup, _):
    """NVIL with a baseline over the width of the training data's inputs."""
    inputs = setup.split("train", "nvil").batch([0]).inputs
    if not inputs.is_floating_point():
        raise SettingsError(
            "nvil's baseline is an MLP of the inputs' vectors (word counts); these data are token ids"
        )
    return NVIL(setup.story, setup.guide, inputs.shape[-1], **setup.training)


register(
    InferenceKind(
        "wake-sleep",
        "wake-sleep (Hinton et al. 1995): story on log p(x, h) at h ~ q, encoder on the story's dreams",
        lambda s, _: WakeSleep(s.story, s.guide, **s.training),
    )
)
register(
    InferenceKind(
        "rws",
        "reweighted wake-sleep (Bornschein & Bengio 2015): K draws of q per datum, wake-theta and wake-phi",
        lambda s, k: ReweightedWakeSleep(s.story, s.guide, k, **s.training),
        steps="draws of q per datum",
    )
)
register(
    InferenceKind(
        "nvil",
        "NVIL (Mnih & Gregor 2014): score-function encoder gradient, learned baseline, normalised signal",
        _nvil,
    )
)

register(
    InferenceKind(
        "cd",
        "contrastive divergence CD-K for undirected stories (rsm): K Gibbs steps from each datum",
        lambda s, k: contrastive(s, k, persistent=False),
        steps="Gibbs steps",
    )
)
register(
    InferenceKind(
        "pcd",
        "persistent contrastive divergence (Tieleman 2008): K Gibbs steps of persistent chains per update",
        lambda s, k: contrastive(s, k, persistent=True),
        steps="Gibbs steps",
    )
)


@dataclass
class InferenceSettings:
    """Inference: the kind (a spec of the registry), its objective's options and remedies for collapse"""

    inference: str = setting(
        "vae", "inference kind, a spec of the registry: " + ", ".join(specs(trains=True))
    )
    elbo: str = setting(
        "meanfield",
        "the mean-field ELBO with analytic KL (MeanFieldELBO) or Trace_ELBO",
        choices=["meanfield", "trace"],
    )
    anneal: str | None = setting(None, f"KL annealing: {FORMS}")
    free_bits: float | None = setting(None, "free bits per latent coordinate (nats)", within=NONNEGATIVE)
    word_dropout: float = setting(
        0.0, "sentence stories: replace decoder input words by <unk> at this rate", within=PROBABILITY
    )
    refinement_lr: float = setting(0.1, "step size of the K refinement steps", within=POSITIVE)

    def __post_init__(self):
        check_ranges(self)
        parse(self.inference)
        if self.anneal:
            parse_schedule(self.anneal)

    def training(self) -> dict:
        """The annealing and word-dropout settings of :class:`~fabula.inference.VariationalInference`."""
        out = {"annealing": parse_schedule(self.anneal) if self.anneal else None}
        if self.word_dropout:
            out["word_dropout"] = self.word_dropout
        return out
