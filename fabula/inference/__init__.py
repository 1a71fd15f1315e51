"""Swappable inference objects: each fits any story with any compatible guide."""

from fabula.inference.aggressive import Aggressive
from fabula.inference.amortized import Amortized
from fabula.inference.annealing import parse_schedule
from fabula.inference.base import Inference
from fabula.inference.dispersed import Dispersed
from fabula.inference.free_bits import FreeBitsELBO
from fabula.inference.mcmc import MCMC
from fabula.inference.non_amortized import NonAmortized
from fabula.inference.refinement import Refinement
from fabula.inference.semi_amortized import AmortizedSVI, Refined, SemiAmortized, StochasticVI

__all__ = [
    "Aggressive",
    "Amortized",
    "AmortizedSVI",
    "Dispersed",
    "FreeBitsELBO",
    "Inference",
    "MCMC",
    "NonAmortized",
    "Refined",
    "Refinement",
    "SemiAmortized",
    "StochasticVI",
    "parse_schedule",
]
