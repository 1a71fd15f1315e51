r"""A default guide for any story: one variational family per latent site, chosen by its support.

A researcher who writes a :class:`~fabula.models.Story` need not write its guide:
:meth:`SupportGuide.for_story` traces the story's model once on a batch (latents from the prior,
no gradients) and reads each site of ``story.latent_sites``: its support and event shape.

======================================  =================================================================
support of the story's site             :math:`q_\lambda` of the guide's site
======================================  =================================================================
real (``real``, ``real_vector``, ...)   diagonal :math:`\mathcal N(\mu, \sigma^2)` (``to_event``)
positive / nonnegative                  :math:`\mathrm{LogNormal}(\mu, \sigma^2)`, i.e. a normal pushed
                                        through :math:`\exp` (``biject_to(positive)``)
another continuous support with a       a normal in unconstrained space pushed through
``biject_to`` (interval, simplex, ...)  ``biject_to(support)`` (a ``TransformedDistribution``)
boolean                                 :math:`\mathrm{Bernoulli}(\sigma(\ell))`; a scalar site is marked
                                        for enumeration, one with event dimensions is sampled
                                        (score-function gradients: ``Trace_ELBO``)
finite integers :math:`0..K-1`          :math:`\mathrm{Cat}(\mathrm{softmax}(\ell))`, marked
(``Categorical``, ``Binomial(n)``)      ``infer={"enumerate": "parallel"}`` when scalar, so that
                                        ``TraceEnum_ELBO`` sums it out exactly
one-hot                                 :math:`\mathrm{OneHotCat}(\mathrm{softmax}(\ell))`, likewise
======================================  =================================================================

Every draw lies on the support of the story's site. A site no family serves (an unbounded
integer support such as a Poisson count's, a support without a bijection from unconstrained
space, a global latent outside the ``"data"`` plate, a latent whose shape changes with the
batch beyond its size) is refused with a :class:`~fabula.errors.SettingsError` naming it.

:math:`\lambda` is amortized: an encoder of ``batch.inputs`` (an MLP over
:math:`\log(1 + \text{counts})` of a bag of words, over the mean word embedding of a sentence,
or over a real vector) and one linear head per site. :func:`~fabula.inference.objectives.default_objective`
names the training objective the sites need.

References: D. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
A. Kucukelbir, D. Tran, R. Ranganath, A. Gelman, D. Blei. Automatic Differentiation Variational
Inference. JMLR 2017 (a Gaussian in unconstrained space pushed through the support's bijection).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import biject_to
from torch import nn

from fabula.data.bow import BowBatch
from fabula.data.text import PAD, TextBatch
from fabula.data.vectors import VectorBatch
from fabula.errors import SettingsError
from fabula.guides.guide import Guide
from fabula.models.story import DATA_DIM
from fabula.nn import MLP
from fabula.nn.lstm import word_embedding
from fabula.nn.mlp import ACTIVATIONS
from fabula.traces import prior_trace, sample_sites

FAMILIES = ("normal", "constrained", "bernoulli", "categorical", "one_hot")
"""The variational families of a :class:`SupportGuide`'s sites."""

INPUTS = ("counts", "tokens", "vectors")
"""What the encoder reads: word counts, padded token ids with a mask, or real vectors."""

_BOUNDS = ("lower_bound", "upper_bound")
_BOUNDED = (
    "greater_than",
    "greater_than_eq",
    "less_than",
    "interval",
    "half_open_interval",
    "integer_interval",
)
"""Constraint classes of :mod:`pyro.distributions.constraints` made from their bounds alone."""


def _singleton_names() -> dict[int, str]:
    """The shortest name of each constraint object of :mod:`pyro.distributions.constraints`."""
    names: dict[int, str] = {}
    for name, value in sorted(vars(constraints).items(), key=lambda item: (len(item[0]), item[0])):
        if isinstance(value, constraints.Constraint):
            names.setdefault(id(value), name)
    return names


_SINGLETONS = _singleton_names()
_CLASSES = {getattr(constraints, name): name for name in _BOUNDED}


def _unwrap(support) -> tuple[object, int]:
    """The base constraint of ``support`` and how many event dimensions ``independent`` adds."""
    dims = 0
    while isinstance(support, constraints.independent):
        dims += support.reinterpreted_batch_ndims
        support = support.base_constraint
    return support, dims


def _bound(value, event_shape: tuple[int, ...]):
    """A JSON bound: a number, or nested lists broadcasting against the event shape; ``None``
    when it varies across the batch."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    if value.numel() == 1:
        return float(value.reshape(()))
    keep = min(value.dim(), len(event_shape))
    rows = value.reshape(-1, *value.shape[value.dim() - keep :])
    if not bool((rows == rows[:1]).all()):
        return None
    return rows[0].tolist()


def _describe(support, event_shape: tuple[int, ...]) -> dict | None:
    """A JSON description of a constraint that :func:`_constraint` rebuilds, or ``None``."""
    base, dims = _unwrap(support)
    if id(base) in _SINGLETONS:
        out = {"constraint": _SINGLETONS[id(base)]}
    elif type(base) in _CLASSES:
        out = {"constraint": _CLASSES[type(base)]}
        for key in _BOUNDS:
            if hasattr(base, key):
                bound = _bound(getattr(base, key), event_shape)
                if bound is None:
                    return None
                out[key] = bound
    else:
        return None
    if dims:
        out["event_dims"] = dims
    return out


def _constraint(description: dict, device=None):
    """The constraint that :func:`_describe` described, its tensor bounds on ``device``."""
    name = description["constraint"]
    value = getattr(constraints, name, None)
    if isinstance(value, constraints.Constraint):
        base = value
    elif name in _BOUNDED:
        bounds = {
            k: (torch.tensor(v, device=device) if isinstance(v, list) else v)
            for k, v in description.items()
            if k in _BOUNDS
        }
        base = value(**bounds)
    else:
        raise SettingsError(f"unknown support {name!r} in a guide site's description")
    dims = int(description.get("event_dims", 0))
    return constraints.independent(base, dims) if dims else base


def _is_log_normal(description: dict) -> bool:
    """A support onto which ``biject_to`` is :math:`\\exp` (``(0, \\infty)`` or ``[0, \\infty)``)."""
    name = description["constraint"]
    if name in ("positive", "nonnegative"):
        return True
    return name in ("greater_than", "greater_than_eq") and description.get("lower_bound") == 0.0


@dataclasses.dataclass(frozen=True)
class _Site:
    """One site's family, shapes and the keys of its λ."""

    name: str
    family: str
    event_shape: tuple[int, ...]
    support: dict | None = None
    categories: int | None = None

    @classmethod
    def parse(cls, spec: dict) -> _Site:
        if not isinstance(spec, dict) or "name" not in spec or "family" not in spec:
            raise SettingsError(
                f"a guide site is a dict with 'name', 'family' and 'event_shape', got {spec!r}"
            )
        name, family = str(spec["name"]), spec["family"]
        if family not in FAMILIES:
            raise SettingsError(
                f"site {name!r}: unknown family {family!r}; choose from {', '.join(FAMILIES)}"
            )
        event_shape = tuple(int(n) for n in spec.get("event_shape", ()))
        support = spec.get("support")
        categories = spec.get("categories")
        if family == "constrained" and not isinstance(support, dict):
            raise SettingsError(f"site {name!r}: a constrained site needs its 'support' described")
        if family in ("categorical", "one_hot"):
            if not (isinstance(categories, int) and categories >= 1):
                raise SettingsError(f"site {name!r}: a {family} site needs 'categories', an integer >= 1")
            if family == "one_hot" and event_shape[-1:] != (categories,):
                raise SettingsError(
                    f"site {name!r}: a one-hot site's event shape ends in its {categories} categories"
                )
        return cls(name, family, event_shape, support, categories)

    @functools.cached_property
    def unconstrained_shape(self) -> tuple[int, ...]:
        """The event shape of the normal that a constrained site pushes onto its support."""
        if self.family != "constrained":
            return self.event_shape
        return tuple(biject_to(_constraint(self.support)).inverse_shape(self.event_shape))

    @functools.cached_property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-datum shape of each tensor of λ, keyed ``{site}_{param}`` (λ holds it flattened)."""
        if self.family in ("normal", "constrained"):
            shape = self.unconstrained_shape
            return {f"{self.name}_loc": shape, f"{self.name}_log_scale": shape}
        if self.family == "bernoulli":
            return {f"{self.name}_logits": self.event_shape}
        if self.family == "categorical":
            return {f"{self.name}_logits": (*self.event_shape, self.categories)}
        return {f"{self.name}_logits": self.event_shape}  # one_hot: [..., K]

    @property
    def event_dims(self) -> int:
        """Event dimensions of q beyond its base distribution's."""
        return len(self.event_shape) - (1 if self.family == "one_hot" else 0)

    @property
    def enumerated(self) -> bool:
        """A finite discrete scalar (or single one-hot) site, summed out by ``TraceEnum_ELBO``."""
        return self.family in ("bernoulli", "categorical", "one_hot") and self.event_dims == 0

    @property
    def reparameterized(self) -> bool:
        return self.family in ("normal", "constrained")

    def distribution(self, params: dict[str, torch.Tensor]) -> dist.Distribution:
        """:math:`q_\\lambda` of this site from flat λ ``[..., B, n]``; leading dimensions broadcast."""
        params = {k: _shaped(params[k], shape) for k, shape in self.param_shapes.items()}
        if self.family in ("normal", "constrained"):
            loc, scale = params[f"{self.name}_loc"], params[f"{self.name}_log_scale"].exp()
            dims = len(self.unconstrained_shape)
            if self.family == "normal":
                return dist.Normal(loc, scale).to_event(dims)
            if _is_log_normal(self.support):
                return dist.LogNormal(loc, scale).to_event(dims)
            transform = biject_to(_constraint(self.support, loc.device))
            return dist.TransformedDistribution(dist.Normal(loc, scale).to_event(dims), transform)
        logits = params[f"{self.name}_logits"]
        if self.family == "bernoulli":
            q = dist.Bernoulli(logits=logits)
        elif self.family == "categorical":
            q = dist.Categorical(logits=logits)
        else:
            q = dist.OneHotCategorical(logits=logits)
        return q.to_event(self.event_dims) if self.event_dims else q


def _shaped(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Flat per-datum λ ``[..., n]`` as ``[..., *shape]``."""
    return x.reshape(*x.shape[:-1], *shape)


class _Counts(nn.Module):
    r""":math:`\log(1 + x)` of a bag of words' counts ``[B, V]``."""

    def __init__(self, width: int):
        super().__init__()
        self.width = width

    def forward(self, batch) -> torch.Tensor:
        x = batch.inputs
        if x.shape[-1] != self.width:
            raise ValueError(f"guide expects inputs of width {self.width}, got {x.shape[-1]}")
        return torch.log1p(x)


class _Vectors(_Counts):
    """A real vector ``[B, D]`` as it is."""

    def forward(self, batch) -> torch.Tensor:
        x = batch.inputs
        if x.shape[-1] != self.width:
            raise ValueError(f"guide expects inputs of width {self.width}, got {x.shape[-1]}")
        return x


class _MeanEmbedding(nn.Module):
    """The mean word embedding of a sentence's predicted tokens (its words and ``<eos>``)."""

    def __init__(self, vocab_size: int, embed_dim: int):
        super().__init__()
        self.embed = word_embedding(vocab_size, embed_dim)

    def forward(self, batch) -> torch.Tensor:
        mask = batch.mask.to(self.embed.weight.dtype)
        summed = (self.embed(batch.targets) * mask[..., None]).sum(-2)
        return summed / mask.sum(-1, keepdim=True).clamp(min=1.0)


class SupportGuide(Guide):
    r"""A mean-field guide over a story's local latent sites, one family per site chosen by its
    support (the table of :mod:`fabula.guides.auto`), with :math:`\lambda = \mathrm{heads}(
    \mathrm{MLP}(\mathrm{features}(x)))`. Build it with :meth:`for_story`; the constructor
    takes only JSON-ready arguments, so ``type(g)(**g.config())`` rebuilds it.

    :param input_dim: the width of a bag of words or vector (its vocabulary or dimension), or the
        vocabulary size of sentences.
    :param inputs: ``"counts"`` (bag-of-words batches: an MLP over :math:`\log(1 + x)`),
        ``"tokens"`` (sentence batches: the mean embedding of the words and ``<eos>`` over the
        mask, then an MLP) or ``"vectors"`` (an MLP over ``batch.inputs``).
    :param sites: one dict per latent site: ``name``, ``family`` (one of :data:`FAMILIES`),
        ``event_shape``, and for a ``constrained`` site its ``support`` (a dict naming the
        constraint of :mod:`pyro.distributions.constraints` and its bounds), for a
        ``categorical`` or ``one_hot`` site its number of ``categories``.
    :param hidden: hidden layer sizes of the MLP (empty: linear heads on the features).
    :param embed_dim: word embedding size (``inputs="tokens"`` only).
    :param activation: the MLP's nonlinearity.

    :meth:`local_params` keys are ``{site}_loc``, ``{site}_log_scale`` (normal and constrained
    families, in unconstrained space) and ``{site}_logits`` (discrete families), each ``[B, n]``:
    the datum's parameters of the site flattened (``[B, 1]`` for a scalar site; ``[B, K]`` for a
    categorical one), the form that per-datum tables and refinement take.
    """

    def __init__(
        self,
        input_dim: int,
        inputs: str,
        sites: Sequence[dict],
        hidden: Sequence[int] = (200,),
        embed_dim: int = 64,
        activation: str = "relu",
    ):
        super().__init__()
        self.remember(locals())
        if inputs not in INPUTS:
            raise SettingsError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
        if activation not in ACTIVATIONS:
            raise SettingsError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if not (isinstance(input_dim, int) and input_dim >= 1):
            raise SettingsError(f"input_dim must be an integer >= 1, got {input_dim!r}")
        self.sites = tuple(_Site.parse(s) for s in sites)
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise SettingsError(f"guide sites must have distinct names, got {names}")
        self.input_dim, self.inputs = input_dim, inputs
        if inputs == "tokens":
            self.features, width = _MeanEmbedding(input_dim, embed_dim), embed_dim
        elif inputs == "counts":
            self.features, width = _Counts(input_dim), input_dim
        else:
            self.features, width = _Vectors(input_dim), input_dim
        hidden = list(hidden)
        if hidden:
            self.trunk = nn.Sequential(
                MLP(width, hidden[:-1], hidden[-1], activation), ACTIVATIONS[activation]()
            )
            width = hidden[-1]
        else:
            self.trunk = nn.Identity()
        self.heads = nn.ModuleList(
            nn.Linear(width, sum(math.prod(shape) for shape in site.param_shapes.values()))
            for site in self.sites
        )

    @property
    def latent_sites(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sites)

    @property
    def enumerated_sites(self) -> tuple[str, ...]:
        """Sites marked ``infer={"enumerate": "parallel"}`` (summed out by ``TraceEnum_ELBO``)."""
        return tuple(s.name for s in self.sites if s.enumerated)

    @property
    def score_function_sites(self) -> tuple[str, ...]:
        """Discrete sites that are sampled, not enumerated: their gradients need score-function terms."""
        return tuple(s.name for s in self.sites if not s.reparameterized and not s.enumerated)

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        h = self.trunk(self.features(batch))
        out = {}
        for site, head in zip(self.sites, self.heads, strict=True):
            shapes = site.param_shapes
            parts = head(h).split([math.prod(s) for s in shapes.values()], dim=-1)
            out.update(zip(shapes, parts, strict=True))
        return out

    def init_params(self, num: int, device="cpu") -> dict[str, torch.Tensor]:
        """Zero locations, log-scales and logits: a standard normal (in unconstrained space)
        for continuous sites, uniform probabilities for discrete ones (in the guide's dtype)."""
        dtype = self.heads[0].weight.dtype if self.sites else torch.get_default_dtype()
        return {
            key: torch.zeros(num, math.prod(shape), device=device, dtype=dtype)
            for site in self.sites
            for key, shape in site.param_shapes.items()
        }

    def forward(self, batch, params: dict[str, torch.Tensor] | None = None) -> None:
        if params is None:
            params = self.local_params(batch)
        with pyro.plate("data", batch.size, dim=DATA_DIM):
            for site in self.sites:
                infer = {"enumerate": "parallel"} if site.enumerated else {}
                pyro.sample(site.name, site.distribution(params), infer=infer)

    @classmethod
    def for_story(
        cls,
        story,
        batch,
        hidden: Sequence[int] = (200,),
        *,
        inputs: str | None = None,
        input_dim: int | None = None,
        embed_dim: int = 64,
        activation: str = "relu",
    ) -> SupportGuide:
        """The guide of ``story``'s latent sites, read from one prior trace of its model on ``batch``.

        ``inputs`` is taken from the batch's type (a bag of words: ``"counts"``; sentences:
        ``"tokens"``; vectors: ``"vectors"``) unless given, and ``input_dim`` from the width of
        ``batch.inputs``; sentences need ``input_dim``, the vocabulary size. The guide is on the
        batch's device. A site no family serves is refused, naming it.
        """
        if inputs is None:
            inputs = _inputs_of(batch)
        if input_dim is None:
            if inputs == "tokens":
                raise SettingsError("a guide of sentences needs input_dim, the vocabulary size")
            input_dim = int(batch.inputs.shape[-1])
        owner = type(story).__name__
        sites = _read_sites(story, batch, owner)
        variant = _variant(batch)
        if variant is not None:
            again = _read_sites(story, variant, owner)
            for first, second in zip(sites, again, strict=True):
                if first != second:
                    raise SettingsError(
                        f"site {first['name']!r} of {owner} changes with the batch ({_summary(first)} for one "
                        f"batch, {_summary(second)} for another): no default guide serves it; write a guide"
                    )
        guide = cls(input_dim, inputs, sites, list(hidden), embed_dim, activation)
        return guide.to(batch.inputs.device)


def _summary(site: dict) -> str:
    extra = {k: v for k, v in site.items() if k not in ("name", "family")}
    return f"{site['family']} {extra}"


def _inputs_of(batch) -> str:
    if isinstance(batch, BowBatch):
        return "counts"
    if isinstance(batch, TextBatch):
        return "tokens"
    if isinstance(batch, VectorBatch):
        return "vectors"
    raise SettingsError(
        f"no default encoder reads a {type(batch).__name__}; give inputs= (one of {', '.join(INPUTS)})"
    )


def _variant(batch):
    """The batch less its last datum (and, for sentences, with one more column of padding):
    a second trace on it shows a latent whose shape follows the batch. ``None`` for other
    batch types, or a batch of one datum with nothing to pad."""
    if isinstance(batch, TextBatch):
        pad = torch.full_like(batch.tokens[:, :1], PAD)
        widened = TextBatch(
            torch.cat([batch.tokens, pad], 1),
            batch.lengths,
            batch.index,
            torch.cat([batch.decoder_inputs, pad], 1),
        )
        return _fewer(widened) if batch.size > 1 else widened
    if isinstance(batch, BowBatch | VectorBatch) and batch.size > 1:
        return _fewer(batch)
    return None


def _fewer(batch):
    """The batch less its last datum (every tensor field sliced along the batch)."""
    n = batch.size
    return dataclasses.replace(
        batch,
        **{
            f.name: getattr(batch, f.name)[: n - 1]
            for f in dataclasses.fields(batch)
            if isinstance(getattr(batch, f.name), torch.Tensor) and getattr(batch, f.name).shape[:1] == (n,)
        },
    )


def _refuse(name: str, owner: str, why: str) -> SettingsError:
    return SettingsError(f"site {name!r} of {owner} {why}: no default guide serves it; write a guide")


def _read_sites(story, batch, owner: str) -> list[dict]:
    """The JSON description of each of ``story.latent_sites``, from a prior trace on ``batch``."""
    trace = prior_trace(story, batch)
    latent = set(story.latent_sites)
    for site in sample_sites(trace):
        if not site["is_observed"] and site["name"] not in latent:
            raise _refuse(site["name"], owner, "is latent in the model but not one of its latent_sites")
    out = []
    for name in story.latent_sites:
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            raise SettingsError(f"latent site {name!r} of {owner} is not sampled by its model on this batch")
        if site["is_observed"]:
            raise SettingsError(f"latent site {name!r} of {owner} is observed in its model")
        out.append(_describe_site(site, batch.size, owner))
    return out


def _describe_site(site: dict, batch_size: int, owner: str) -> dict:
    name, fn = site["name"], site["fn"]
    in_plate = any(f.name == "data" and f.dim == DATA_DIM for f in site["cond_indep_stack"])
    if not in_plate or tuple(fn.batch_shape) != (batch_size,):
        raise _refuse(
            name,
            owner,
            f"has batch shape {tuple(fn.batch_shape)}, not that of the data plate alone ({batch_size},) "
            "(a default guide serves local latents)",
        )
    event_shape = tuple(fn.event_shape)
    support = fn.support
    if constraints.is_dependent(support):
        raise _refuse(name, owner, f"has a support ({support}) that depends on the distribution's arguments")
    base, _ = _unwrap(support)
    spec = {"name": name, "event_shape": list(event_shape)}
    if isinstance(base, type(constraints.real)):
        return {**spec, "family": "normal"}
    if base is constraints.boolean:
        return {**spec, "family": "bernoulli"}
    if base.is_discrete:
        return {**spec, **_discrete(name, owner, base, event_shape)}
    try:
        transform = biject_to(support)
    except NotImplementedError:
        raise _refuse(
            name, owner, f"has support {support}, onto which no bijection from real space is known"
        ) from None
    description = _describe(support, event_shape)
    if description is None:
        raise _refuse(name, owner, f"has support {support} whose bounds vary across the batch")
    spec = {**spec, "family": "constrained", "support": description}
    unconstrained = tuple(transform.inverse_shape(event_shape))
    zeros = torch.zeros(batch_size, math.prod(unconstrained))
    q = _Site.parse(spec).distribution({f"{name}_loc": zeros, f"{name}_log_scale": zeros})
    if tuple(q.event_shape) != event_shape or tuple(q.batch_shape) != (batch_size,):
        raise _refuse(
            name, owner, f"has support {support} on event shape {event_shape}, which no pushed normal fits"
        )
    return spec


def _discrete(name: str, owner: str, base, event_shape: tuple[int, ...]) -> dict:
    """The family of a finite discrete support: integers ``0..K-1`` or one-hot vectors."""
    if base is constraints.one_hot:
        if not event_shape:
            raise _refuse(name, owner, "is one-hot without an event dimension")
        return {"family": "one_hot", "categories": event_shape[-1]}
    if isinstance(base, constraints.integer_interval):
        lower, upper = (_bound(getattr(base, k), ()) for k in _BOUNDS)
        if lower is None or upper is None or isinstance(lower, list) or isinstance(upper, list):
            raise _refuse(name, owner, f"has support {base} whose bounds vary across the batch or its events")
        if lower != 0:
            raise _refuse(name, owner, f"has support {base}: a default guide serves integers from 0")
        return {"family": "categorical", "categories": int(upper) + 1}
    raise _refuse(name, owner, f"has support {base}, which is discrete and not finite")
