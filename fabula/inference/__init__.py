"""Swappable inference objects: each fits any story with any compatible guide."""

from fabula.inference.aggressive import Aggressive
from fabula.inference.amortized import Amortized
from fabula.inference.annealing import parse_schedule
from fabula.inference.base import Inference
from fabula.inference.free_bits import FreeBitsELBO
from fabula.inference.non_amortized import NonAmortized

__all__ = ["Aggressive", "Amortized", "FreeBitsELBO", "Inference", "NonAmortized", "parse_schedule"]
