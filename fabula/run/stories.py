"""The stories a run can train: one registry of recipes, filled the same way for fabula's own
stories (:mod:`fabula.run.shipped_stories`) and a user's.

A story is named by

* a registered name (``nvdm``, ``lstm-vae``, ...);
* a ``module:Class`` path to a :class:`~fabula.models.Story` subclass on the Python path
  (``fabula train my_pkg.stories:TopicMixture``);
* an entry point of the ``fabula.stories`` group of an installed package, whose value is such
  a class (``[project.entry-points."fabula.stories"] topics = "my_pkg.stories:TopicMixture"``).

A user's story gets a recipe made from its class: its settings are ``Class.settings_class`` where
it names one (a dataclass of its constructor's keyword arguments, with help and ranges), else its
constructor's typed parameters but ``vocab_size`` (each becomes a flag; one without a default is
a required flag),
``Class.reads`` says which data it generates (``"documents"`` or ``"sentences"``), its guide is
``Class.guide_class`` where it names one (a :class:`~fabula.guides.Guide` with
``for_story(story, batch)``), else a :class:`~fabula.guides.SupportGuide` chosen by its latent
sites' supports, and its objective is the default for those supports
(:func:`fabula.run.objectives.by_supports`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fabula.data import DOCUMENTS, SENTENCES
from fabula.errors import SettingsError
from fabula.guides import SupportGuide
from fabula.models import Story
from fabula.models.capabilities import Undirected
from fabula.run.callbacks import ByCapability
from fabula.run.objectives import by_supports, continuous_objective
from fabula.settings import ANY, base_type

#: The entry-point group through which an installed package offers its stories.
ENTRY_POINTS = "fabula.stories"
#: The parameter types a user's story constructor may have to become flags.
FLAG_TYPES = (int, float, str, bool)


@dataclass(frozen=True)
class Recipe:
    """A registered story: its settings class, builder ``build(settings, train) -> (story,
    guide)``, the data it ``reads``, its objective ``objective(settings, inference_settings,
    guide)``, the training defaults that differ from the general ones (``{section: {field:
    value}}``), per-epoch callbacks, and the estimator spec of the per-epoch evaluation
    (``None``: none, for a story that no cheap estimator scores)."""

    story: type
    guide: type
    settings: type
    build: Callable
    reads: str
    objective: Callable = continuous_objective
    defaults: dict = field(default_factory=dict)
    callbacks: tuple = ()
    evaluation: str | None = "elbo"


#: The registered stories by name (fabula's own are added by :mod:`fabula.run.shipped_stories`).
STORIES: dict[str, Recipe] = {}


def register_story(name: str, recipe: Recipe) -> Recipe:
    """Add ``recipe`` under ``name`` (new, and not a ``module:Class`` path)."""
    if name in STORIES or ":" in name:
        raise SettingsError(f"story {name!r} is registered already or is not a plain name")
    STORIES[name] = recipe
    return recipe


def _help(cls: type, name: str) -> str:
    """The ``:param name:`` line of ``cls``'s docstrings, else a plain description."""
    for doc in (cls.__init__.__doc__, cls.__doc__):
        for line in inspect.cleandoc(doc or "").splitlines():
            if line.startswith(f":param {name}:"):
                return line.partition(":")[2].partition(":")[2].strip().rstrip(".")
    return f"{cls.__name__}'s {name}"


def signature_settings(cls: type) -> type:
    """A settings dataclass of ``cls``'s constructor parameters but ``vocab_size``."""
    signature = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__)
    if "vocab_size" not in signature.parameters:
        raise SettingsError(f"{cls.__name__}'s constructor must take vocab_size (the corpus gives it)")
    specs = []
    for name, p in list(signature.parameters.items())[1:]:
        if name == "vocab_size":
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise SettingsError(f"{cls.__name__}'s constructor takes *{name}; a flag cannot give it")
        if name not in hints or base_type(hints[name])[0] not in FLAG_TYPES:
            shown = hints.get(name, "no annotation")
            raise SettingsError(
                f"{cls.__name__}'s parameter {name!r} has {shown}; a setting is int, float, str, bool, "
                "a tuple of them or one of them or None"
            )
        metadata = {"help": _help(cls, name), "choices": None, "within": ANY, "unset": None}
        default = {} if p.default is p.empty else {"default": p.default}
        if isinstance(p.default, list):
            raise SettingsError(f"{cls.__name__}'s parameter {name!r} defaults to a list; use a tuple")
        specs.append((name, hints[name], dataclasses.field(metadata=metadata, **default)))
    settings = dataclasses.make_dataclass(f"{cls.__name__}Settings", specs, kw_only=True)
    settings.__doc__ = inspect.cleandoc(cls.__doc__ or cls.__name__).splitlines()[0]
    return settings


def named_settings(cls: type) -> type:
    """``cls.settings_class``, checked: a dataclass whose fields the constructor takes."""
    settings = cls.settings_class
    if not dataclasses.is_dataclass(settings):
        raise SettingsError(f"{cls.__name__}.settings_class is {settings!r}, not a dataclass")
    taken = set(inspect.signature(cls.__init__).parameters) - {"self", "vocab_size"}
    extra = sorted({f.name for f in dataclasses.fields(settings)} - taken)
    if extra or "vocab_size" not in inspect.signature(cls.__init__).parameters:
        raise SettingsError(
            f"{cls.__name__}'s constructor must take vocab_size and each field of {settings.__name__} "
            f"(it does not take {extra or ['vocab_size']})"
        )
    return settings


@functools.cache
def recipe_of(cls: type) -> Recipe:
    """The recipe of a user's story class (see the module's docstring)."""
    if not (isinstance(cls, type) and issubclass(cls, Story)):
        raise SettingsError(f"{cls!r} is not a fabula.models.Story subclass")
    if cls.reads not in (DOCUMENTS, SENTENCES):
        raise SettingsError(
            f"{cls.__name__}.reads is {cls.reads!r}: set it to {DOCUMENTS!r} (bags of words) or "
            f"{SENTENCES!r} (token sequences), the data the story generates"
        )
    guide_class = cls.guide_class or SupportGuide
    settings = named_settings(cls) if cls.settings_class is not None else signature_settings(cls)

    def build(s, train):
        values = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
        story = cls(vocab_size=len(train.vocab), **values)
        if isinstance(story, Undirected):
            raise SettingsError(
                f"{cls.__name__} is undirected (no Pyro model to bound): a user's undirected story is "
                "trained from Python with fabula.inference.ContrastiveDivergence, not from a run"
            )
        first = train.batch(torch.arange(min(len(train), 2)))
        # the default guide reads the vocabulary's size (a sentence batch's token ids do not say it)
        sizes = {"input_dim": len(train.vocab)} if guide_class is SupportGuide else {}
        return story, guide_class.for_story(story, first, **sizes)

    return Recipe(cls, guide_class, settings, build, cls.reads, by_supports, {}, (ByCapability(),))


def _load(path: str) -> type:
    module, _, name = path.partition(":")
    try:
        found = importlib.import_module(module)
    except ImportError as e:
        raise SettingsError(f"story {path!r}: cannot import {module!r} ({e})") from None
    cls = getattr(found, name, None) if name.isidentifier() else None
    if cls is None:
        raise SettingsError(f"story {path!r}: {module!r} has no class {name!r}")
    return cls


def _entry_point(name: str):
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        if entry.name == name:
            return entry
    return None


def recipe(name: str) -> Recipe:
    """The recipe of a registered name, a ``module:Class`` path or a ``fabula.stories`` entry point."""
    if name in STORIES:
        return STORIES[name]
    if ":" in name:
        return recipe_of(_load(name))
    entry = _entry_point(name)
    if entry is not None:
        return recipe_of(entry.load())
    plugins = sorted(e.name for e in importlib.metadata.entry_points(group=ENTRY_POINTS))
    raise SettingsError(
        f"unknown story {name!r}; choose from {sorted(STORIES) + plugins} or give a module:Class path"
    )


def story_names() -> list[str]:
    """The registered stories and the installed ``fabula.stories`` entry points."""
    return sorted(STORIES) + sorted(e.name for e in importlib.metadata.entry_points(group=ENTRY_POINTS))
