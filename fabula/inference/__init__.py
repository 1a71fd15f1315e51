"""Swappable inference objects, composed of a λ source, an objective and an update policy (or a
sampler), built by name from one registry (:mod:`fabula.inference.registry`)."""

from fabula.inference.annealing import parse_schedule
from fabula.inference.base import Inference, Trainable
from fabula.inference.dispersed import DispersedELBO
from fabula.inference.free_bits import FreeBitsELBO
from fabula.inference.kernels import Chains, Kernel, NumPyroNUTS, PyroNUTS, StepKernel
from fabula.inference.mcmc import MCMC
from fabula.inference.mean_field import MeanFieldELBO
from fabula.inference.presets import (
    Amortized,
    AmortizedSVI,
    NonAmortized,
    SemiAmortized,
    StochasticVI,
    refined,
)
from fabula.inference.refinement import Refinement, RefinementWarning
from fabula.inference.sources import Encoded, FromPrior, Refined, Tabulated
from fabula.inference.updates import Aggressive, Joint, StoryThenGuide
from fabula.inference.variational import VariationalInference

__all__ = [
    "MCMC",
    "Chains",
    "Kernel",
    "NumPyroNUTS",
    "PyroNUTS",
    "StepKernel",
    "Aggressive",
    "Amortized",
    "AmortizedSVI",
    "DispersedELBO",
    "Encoded",
    "FreeBitsELBO",
    "FromPrior",
    "Inference",
    "Joint",
    "MeanFieldELBO",
    "NonAmortized",
    "Refined",
    "Refinement",
    "RefinementWarning",
    "SemiAmortized",
    "StochasticVI",
    "StoryThenGuide",
    "Tabulated",
    "Trainable",
    "VariationalInference",
    "parse_schedule",
    "refined",
]
