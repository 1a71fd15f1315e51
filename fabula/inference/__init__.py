"""Swappable inference objects, composed of a λ source, an objective and an update policy (or a
sampler), built by name from one registry (:mod:`fabula.inference.kinds`; the kinds fabula ships
are registered in :mod:`fabula.inference.shipped`)."""

from pyro.infer import TraceEnum_ELBO  # Pyro's, beside fabula's objectives: sums out enumerated sites

from fabula.inference import shipped  # noqa: E402, F401  (registers the kinds fabula ships)
from fabula.inference.annealing import parse_schedule
from fabula.inference.base import Inference, Trainable
from fabula.inference.collapsed_gibbs import CollapsedGibbs, TopicGibbs
from fabula.inference.contrastive import ContrastiveDivergence, ContrastiveObjective
from fabula.inference.dispersed import DispersedELBO
from fabula.inference.free_bits import FreeBitsELBO
from fabula.inference.kernels import Chains, DiscreteGibbs, Kernel, NumPyroNUTS, PyroNUTS, StepKernel
from fabula.inference.kinds import InferenceKind, Sampling, Setup, Training, build, register
from fabula.inference.mcmc import MCMC
from fabula.inference.mean_field import MeanFieldELBO
from fabula.inference.nvil import NVIL, NVILLoss
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
from fabula.inference.variational_bayes import MeanFieldTopics, VariationalBayes
from fabula.inference.wake_sleep import ReweightedWakeSleep, ReweightedWakeSleepLoss, WakeSleep

__all__ = [
    "MCMC",
    "InferenceKind",
    "Sampling",
    "Setup",
    "Training",
    "build",
    "register",
    "DiscreteGibbs",
    "Chains",
    "CollapsedGibbs",
    "Kernel",
    "NumPyroNUTS",
    "PyroNUTS",
    "StepKernel",
    "Aggressive",
    "Amortized",
    "ContrastiveDivergence",
    "ContrastiveObjective",
    "AmortizedSVI",
    "DispersedELBO",
    "Encoded",
    "FreeBitsELBO",
    "FromPrior",
    "Inference",
    "Joint",
    "MeanFieldELBO",
    "MeanFieldTopics",
    "NVIL",
    "NVILLoss",
    "NonAmortized",
    "Refined",
    "ReweightedWakeSleep",
    "ReweightedWakeSleepLoss",
    "Refinement",
    "RefinementWarning",
    "SemiAmortized",
    "StochasticVI",
    "StoryThenGuide",
    "Tabulated",
    "TopicGibbs",
    "TraceEnum_ELBO",
    "Trainable",
    "VariationalBayes",
    "VariationalInference",
    "WakeSleep",
    "parse_schedule",
    "refined",
]
