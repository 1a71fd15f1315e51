"""The run layer: a run's configuration resolved once into a plan, the training loop, loading
and resuming, comparisons, and the stories a run can name (fabula's own and a user's). The
library (``fabula.data``, ``models``, ``guides``, ``inference``, ...) never imports it."""

from fabula.run import shipped_stories  # noqa: F401  (registers fabula's own stories)
from fabula.run.config import DataSettings, InferenceSettings, RunSettings, TrainConfig
from fabula.run.data import data_description, load_data
from fabula.run.load import LoadedRun, check_run, load_run
from fabula.run.loop import train
from fabula.run.plan import build_story, inference_setup
from fabula.run.reference import fit_reference, reference_inference
from fabula.run.stories import recipe

__all__ = [
    "DataSettings",
    "InferenceSettings",
    "LoadedRun",
    "RunSettings",
    "TrainConfig",
    "build_story",
    "check_run",
    "data_description",
    "fit_reference",
    "inference_setup",
    "load_data",
    "load_run",
    "recipe",
    "reference_inference",
    "train",
]
