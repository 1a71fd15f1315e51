"""One registry of inference kinds, for ``fabula train --inference``, ``fabula compare``,
``fabula diagnose``, the tests and a user's own code.

A kind is built from a :class:`Setup` (story, guide, objective, trainer settings, data) and its
options, a frozen dataclass read from the spec (:mod:`fabula.inference.spec`: ``rws:k=5``,
``svi:20``). The built object records its spec, and a run's saved configuration rebuilds it as
the kind that was trained. A new kind is one :func:`register` call, e.g. from its own module::

    @dataclass(frozen=True)
    class MyOptions:
        steps: int = setting(10, "inner steps", within=COUNT)

    register(InferenceKind("my-vi", "my inference", lambda setup, o: MyInference(setup.story, setup.guide, o.steps),
                           options=MyOptions, leading="steps"))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from fabula.errors import SettingsError, UsageError
from fabula.inference.base import Inference
from fabula.inference.refinement import Refinement
from fabula.inference.spec import read_options, split
from fabula.models.capabilities import Undirected, declares


@dataclass(frozen=True)
class NoOptions:
    """A kind without options."""


def _arguments(settings) -> dict:
    """A settings object's fields as keyword arguments (values as they are, not copied)."""
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


@dataclass(frozen=True)
class Training:
    """How a kind that trains steps (:class:`~fabula.inference.VariationalInference`'s trainer
    settings): the optimizer (a name, a ``torch.optim.Optimizer`` class or a Pyro optimizer) and
    its arguments, gradient clipping by global norm, the per-epoch learning-rate decay, KL
    annealing (a schedule of :mod:`fabula.inference.annealing`), word dropout, and whether the
    story learns (``False``: only λ is fitted)."""

    optimizer: object = "adam"
    optim_args: dict | None = None
    clip_norm: float | None = None
    lr_decay: float = 1.0
    decay_after: int = 0
    annealing: object = None
    word_dropout: float = 0.0
    learn_story: bool = True

    def arguments(self) -> dict:
        """The keyword arguments of the inference objects that train."""
        return _arguments(self)


@dataclass(frozen=True)
class Sampling:
    """How a sampling kind runs its chains (:class:`~fabula.inference.MCMC`'s settings; the NUTS
    kernel's where ``backend``, ``target_accept`` or ``max_tree_depth`` are given)."""

    num_samples: int = 500
    warmup: int = 500
    num_chains: int = 1
    backend: str | None = None
    target_accept: float | None = None
    max_tree_depth: int | None = None
    progress: bool = True

    NUTS = ("backend", "target_accept", "max_tree_depth")

    def arguments(self, nuts: bool = True) -> dict:
        """The keyword arguments of :class:`~fabula.inference.MCMC` (without the NUTS kernel's
        settings where another kernel samples)."""
        return {k: v for k, v in _arguments(self).items() if nuts or k not in self.NUTS}


@dataclass(frozen=True)
class Setup:
    """What an inference kind is built from: typed settings, each kind's own options (read from
    its spec) overriding the ones they name.

    :param objective: the story's training objective (``None``: the default ELBO).
    :param training: how kinds that train step (:class:`Training`).
    :param refinement: the refinement of λ (:class:`~fabula.inference.Refinement`) of kinds
        that refine; their options set its steps and whatever else they name.
    :param data: the splits (kinds that need the training data or a validation split).
    :param trained: the trained inference object of a run (test-time kinds refine its λ).
    :param sampling: how sampling kinds run their chains (:class:`Sampling`).
    """

    story: object
    guide: object
    objective: object = None
    training: Training = field(default_factory=Training)
    refinement: Refinement = field(default_factory=Refinement)
    data: dict | None = None
    batch_size: int = 64
    seed: int = 0
    trained: Inference | None = None
    sampling: Sampling = field(default_factory=Sampling)

    def split(self, name: str, kind: str):
        if not self.data or name not in self.data:
            have = sorted(self.data or {})
            raise SettingsError(f"inference {kind!r} needs a {name!r} split; the data has {have}")
        return self.data[name]

    def variational(self) -> dict:
        """The settings every variational kind passes on: its objective and training."""
        return {"objective": self.objective, **self.training.arguments()}


@dataclass(frozen=True)
class InferenceKind:
    """A registered kind: ``build(setup, options)`` makes the object from an instance of
    ``options`` (a frozen dataclass of settings declared with :func:`~fabula.settings.setting`);
    ``leading`` names the option a bare value sets (K of ``rws:5``); ``trains``: whether it fits
    a story; ``own_objective``: whether it brings its own loss and ignores the setup's objective;
    ``kl``: whether its loss has the ELBO's KL, on which KL annealing and free bits act;
    ``undirected``: whether it trains undirected stories
    (:class:`~fabula.models.capabilities.Undirected`), and only those (every other kind needs a
    Pyro model); ``needs``: the capabilities a story must declare
    (:class:`~fabula.models.capabilities.Dreams` for wake-sleep); ``reads``: the data its story
    must read (``None``: either). :func:`unfit` reads the last three. ``adversarial``: whether it
    trains the story against a discriminator, which changes a story without latents too.
    ``own_guide``: whether it brings its own q (a λ source of its own making), so that the
    story's guide is neither trained nor stored."""

    name: str
    summary: str
    build: Callable[[Setup, object], Inference]
    options: type = NoOptions
    leading: str | None = None
    trains: bool = True
    own_objective: bool = False
    kl: bool = True
    undirected: bool = False
    needs: tuple[type, ...] = ()
    reads: str | None = None
    adversarial: bool = False
    own_guide: bool = False


#: The registered inference kinds by name (:func:`register` adds one).
KINDS: dict[str, InferenceKind] = {}


def register(kind: InferenceKind) -> InferenceKind:
    """Add ``kind`` to the registry (its name must be new)."""
    if kind.name in KINDS:
        raise SettingsError(f"inference kind {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def parse(text: str) -> tuple[InferenceKind, object]:
    """``"NAME"`` or ``"NAME:OPTIONS"`` -> (kind, its options).

    >>> from fabula.inference.kinds import parse
    >>> kind, options = parse("rws:5")  # the bare value sets the kind's leading option
    >>> kind.name, kind.leading, options
    ('rws', 'k', RWSOptions(k=5, insomnia=1.0))
    >>> parse("svi:stpes=3")
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: 'svi:stpes=3': inference 'svi' has no option 'stpes' (its options: steps, lr, momentum, clip_norm, init_scale)
    """
    spec = split(text)
    if spec.name not in KINDS:
        raise SettingsError(f"unknown inference {text!r}; choose from {', '.join(KINDS)}")
    kind = KINDS[spec.name]
    return kind, read_options(kind.options, kind.leading, spec, text)


def names(trains: bool | None = None) -> list[str]:
    """The registered kinds' names (only those that train, or do not, if given)."""
    return [k.name for k in KINDS.values() if trains is None or k.trains == trains]


def unfit(kind: InferenceKind, story: type) -> str | None:
    """Why ``kind`` cannot train stories of class ``story``, or ``None`` where it can (read from
    the class, before any story is built)."""
    undirected = declares(story, Undirected)
    if kind.undirected and not undirected:
        return (
            f"{kind.name} trains undirected stories (free energy and Gibbs conditionals), "
            f"and {story.__name__} is not one"
        )
    if undirected and not kind.undirected:
        return f"{story.__name__} is undirected (no Pyro model to bound)"
    for capability in kind.needs:
        if not declares(story, capability):
            return (
                f"{kind.name} needs a story with the {capability.__name__} capability "
                f"(fabula.models.capabilities), and {story.__name__} lacks it"
            )
    reads = getattr(story, "reads", None)
    if kind.reads is not None and reads is not None and reads != kind.reads:
        return f"{kind.name} trains stories of {kind.reads}, and {story.__name__} reads {reads}"
    return None


def build(spec: str, setup: Setup) -> Inference:
    """The inference object of ``spec`` for ``setup``, recording its spec.

    >>> from fabula.guides import NormalGuide
    >>> from fabula.inference import Refinement, Setup, build
    >>> from fabula.models import NVDM
    >>> setup = Setup(NVDM(vocab_size=40, latent_dim=4), NormalGuide(40, 4), refinement=Refinement(lr=0.05))
    >>> vi = build("vae+svi:10,variant=hjelm", setup)  # VAE+SVI, its encoder fitted to the refined λ
    >>> type(vi).__name__, vi.spec, vi.updates.variant
    ('AmortizedSVI', 'vae+svi:10,variant=hjelm', 'hjelm')
    >>> vi.source.refinement  # the spec's K, the setup's step size
    Refinement(steps=10, lr=0.05, momentum=0.5, clip_norm=5.0, hvp='exact', epsilon=1e-05)
    >>> build("sa-vae:hvp=fd", setup)
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: 'sa-vae:hvp=fd': option hvp must be one of exact, finite-difference, got 'fd'
    >>> build("table", setup)  # a table of λ has one row per training datum
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: inference 'table' needs a 'train' split; the data has []
    """
    kind, options = parse(spec)
    inference = kind.build(setup, options)
    inference.spec = spec
    return inference


def trainable(spec: str) -> InferenceKind:
    """The kind of ``spec``, refusing kinds that do not train."""
    kind, _ = parse(spec)
    if not kind.trains:
        raise UsageError(
            f"inference {spec!r} does not train a story; train with one of {', '.join(names(trains=True))}"
        )
    return kind
