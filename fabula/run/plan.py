"""A run's configuration resolved once into what it builds: the story and guide of its recipe,
and the :class:`~fabula.inference.kinds.Setup` every inference kind of the run is built from
(training, loading, resuming, comparing and diagnosing all go through here)."""

from __future__ import annotations

from fabula.inference.kinds import Setup
from fabula.run.config import TrainConfig, objective_of
from fabula.run.stories import recipe


def build_story(config: TrainConfig, train):
    """``(story, guide)`` of the configuration's story for the training split ``train``."""
    return recipe(config.story).build(config.model, train)


def inference_setup(config: TrainConfig, story, guide, splits) -> Setup:
    """What the configuration's inference kind (or another registered kind) is built from."""
    return Setup(
        story,
        guide,
        objective=objective_of(config.story, config.model, config.inference, guide),
        training={**config.inference.training(), **config.optimizer.training()},
        refinement={"lr": config.inference.refinement_lr},
        data=splits,
        batch_size=config.run.batch_size,
        seed=config.run.seed,
    )
