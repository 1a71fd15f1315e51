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
from dataclasses import dataclass

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from fabula.errors import SettingsError


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


@dataclass(frozen=True)
class Constant:
    beta: float = 1.0

    def __call__(self, step: int) -> float:
        return self.beta


@dataclass(frozen=True)
class Linear:
    r""":math:`\beta_t = \min(1, \beta_0 + (1-\beta_0)\, t / T)`."""

    steps: int
    start: float = 0.0

    def __call__(self, step: int) -> float:
        return min(1.0, self.start + (1.0 - self.start) * step / self.steps)


@dataclass(frozen=True)
class Logistic:
    r""":math:`\beta_t = 1 / (1 + e^{-k (t - t_0)})` (Bowman et al. 2016)."""

    rate: float
    midpoint: float

    def __call__(self, step: int) -> float:
        return 1.0 / (1.0 + math.exp(-self.rate * (step - self.midpoint)))


@dataclass(frozen=True)
class Cyclical:
    r"""Fu et al. (2019): in each period of ``period`` steps, :math:`\beta` rises linearly from 0
    to 1 over the first ``ratio`` of the period, then stays at 1."""

    period: int
    ratio: float = 0.5

    def __call__(self, step: int) -> float:
        return min(1.0, (step % self.period) / (self.period * self.ratio))


SCHEDULES = {"constant": Constant, "linear": Linear, "logistic": Logistic, "cyclical": Cyclical}


def parse_schedule(text: str):
    """Read ``"linear:STEPS"``, ``"logistic:RATE:MIDPOINT"``, ``"cyclical:PERIOD[:RATIO]"`` or
    ``"constant[:BETA]"``."""
    name, *args = text.split(":")
    if name not in SCHEDULES:
        raise SettingsError(f"unknown annealing schedule {name!r}; choose from {sorted(SCHEDULES)}")
    cls = SCHEDULES[name]
    try:
        values = [float(a) for a in args]
        if cls in (Linear, Cyclical) and values:
            values[0] = int(values[0])
        schedule = cls(*values)
    except (TypeError, ValueError) as e:
        raise SettingsError(f"bad annealing schedule {text!r}: {e}") from None
    schedule(0)
    return schedule
