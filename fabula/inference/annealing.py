r"""KL annealing: a weight :math:`\beta_t` on the latent sites' terms, set by a schedule.

The annealed objective is :math:`E_q[\log p(x\mid z)] - \beta_t\, KL(q(z\mid x) \| p(z))`.
:class:`ScaleLatents` is ``poutine.scale`` restricted to unobserved sites (and allowing
:math:`\beta = 0`), applied to both the story and the guide so that every ELBO estimator
(analytic or Monte Carlo KL) sees the same weight.

References:
  S. Bowman et al. Generating Sentences from a Continuous Space. CoNLL 2016 (logistic).
  H. Fu et al. Cyclical Annealing Schedule. NAACL 2019 (cyclical).
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from fabula.errors import SettingsError
from fabula.settings import ANY, COUNT, NONNEGATIVE, POSITIVE, PROBABILITY, Range


class ScaleLatents(Messenger):
    """Multiply the log-density scale of every unobserved sample site by ``beta >= 0``."""

    def __init__(self, beta: float):
        if not beta >= 0:
            raise SettingsError(f"KL weight must be >= 0, got {beta}")
        super().__init__()
        self.beta = beta

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.beta * msg["scale"]


def annealed(fn, beta: float):
    """``fn`` with its latent sites' terms weighted by ``beta`` (``fn`` itself when ``beta == 1``)."""
    return fn if beta == 1.0 else ScaleLatents(beta)(fn)


class Schedule:
    r"""A schedule of the KL weight :math:`\beta_t`; its parameters are finite and each within
    its range in ``ranges``, checked on construction."""

    ranges: typing.ClassVar[dict[str, Range]] = {}

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            self.ranges.get(f.name, ANY).check(f.name.upper(), getattr(self, f.name), hints[f.name])


@dataclass(frozen=True)
class Constant(Schedule):
    r""":math:`\beta_t = \beta` at every step (1: the plain ELBO)."""

    beta: float = 1.0

    ranges = {"beta": NONNEGATIVE}

    def __call__(self, step: int) -> float:
        return self.beta


@dataclass(frozen=True)
class Linear(Schedule):
    r""":math:`\beta_t = \min(1, \beta_0 + (1-\beta_0)\, t / T)`.

    A warm-up over 1,000 steps, and what :func:`unfinished_warmup` says of a training that
    stops halfway:

    >>> from fabula.inference.annealing import Linear, unfinished_warmup
    >>> warmup = Linear(steps=1000)
    >>> [warmup(t) for t in (0, 250, 1000, 5000)]
    [0.0, 0.25, 1.0, 1.0]
    >>> unfinished_warmup(warmup, 500), unfinished_warmup(warmup, 1000)
    (0.5, None)
    >>> Linear(steps=0)
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: STEPS must be an integer >= 1, got 0
    """

    steps: int
    start: float = 0.0

    ranges = {"steps": COUNT, "start": PROBABILITY}

    def __call__(self, step: int) -> float:
        return min(1.0, self.start + (1.0 - self.start) * step / self.steps)


@dataclass(frozen=True)
class Logistic(Schedule):
    r""":math:`\beta_t = 1 / (1 + e^{-k (t - t_0)})` (Bowman et al. 2016), computed without
    overflow far from the midpoint."""

    rate: float
    midpoint: float

    ranges = {"rate": POSITIVE}

    def __call__(self, step: int) -> float:
        x = self.rate * (step - self.midpoint)
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class Cyclical(Schedule):
    r"""Fu et al. (2019): in each period of ``period`` steps, :math:`\beta` rises linearly from 0
    to 1 over the first ``ratio`` of the period, then stays at 1."""

    period: int
    ratio: float = 0.5

    ranges = {"period": COUNT, "ratio": Range(above=0, at_most=1)}

    def __call__(self, step: int) -> float:
        return min(1.0, (step % self.period) / (self.period * self.ratio))


WARMED_UP = 0.99
"""The KL weight at which a warm-up counts as finished: the model is then fitted to the ELBO."""


def unfinished_warmup(schedule: Schedule, steps: int) -> float | None:
    r"""The KL weight :math:`\beta` at the last of ``steps`` training steps when ``schedule`` is a
    warm-up to the ELBO (:class:`Linear`, :class:`Logistic`) still under :data:`WARMED_UP` there:
    such a training never fits the bound it is evaluated on. ``None`` for a finished warm-up, and
    for a constant or cyclical weight, which are chosen as such."""
    if not isinstance(schedule, Linear | Logistic):
        return None
    beta = schedule(steps)
    return beta if beta < WARMED_UP else None


#: The KL-annealing schedules by the name their spec starts with.
SCHEDULES = {"constant": Constant, "linear": Linear, "logistic": Logistic, "cyclical": Cyclical}
#: The forms of a schedule's spec, for help texts and errors.
FORMS = "linear:STEPS[:START], logistic:RATE:MIDPOINT, cyclical:PERIOD[:RATIO] or constant[:BETA]"


def parse_schedule(text: str) -> Schedule:
    """Read a schedule of one of the :data:`FORMS` (``"linear:8000"``, say); integer parameters
    may be written as floats (``linear:1e4``).

    >>> from fabula.inference.annealing import parse_schedule
    >>> parse_schedule("linear:1e4")
    Linear(steps=10000, start=0.0)
    >>> parse_schedule("logistic:0.0025:2500")(2500)  # the midpoint
    0.5
    >>> parse_schedule("cyclical:100")(125)  # a quarter into the second period
    0.5
    """
    name, *args = text.split(":")
    if name not in SCHEDULES:
        raise SettingsError(f"unknown annealing schedule {name!r}; choose from {sorted(SCHEDULES)}")
    cls, params = SCHEDULES[name], fields(SCHEDULES[name])
    hints = typing.get_type_hints(cls)
    try:
        if len(args) > len(params):
            raise ValueError(f"{name} takes at most {len(params)} values")
        values = [float(a) for a in args]
        values = [
            int(v) if hints[f.name] is int and v.is_integer() else v
            for f, v in zip(params, values, strict=False)
        ]
        return cls(*values)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"bad annealing schedule {text!r}: {e} (--anneal takes {FORMS})") from None
