"""A run's configuration resolved once into what it builds: the story and guide of its recipe,
and the :class:`~fabula.inference.kinds.Setup` every inference kind of the run is built from
(training, loading, resuming, comparing and diagnosing all go through here)."""

from __future__ import annotations

from dataclasses import replace

from fabula.inference import Refinement
from fabula.inference.kinds import Sampling, Setup, Training
from fabula.models.capabilities import ArrangesOutput
from fabula.run.config import TrainConfig, objective_of
from fabula.run.stories import recipe


def build_story(config: TrainConfig, train):
    """``(story, guide)`` of the configuration's story for the training split ``train``, its
    output layer arranged by ``train``'s word counts where it has one (a user's story too)."""
    story, guide = recipe(config.story).build(config.model, train)
    if isinstance(story, ArrangesOutput):
        story.fit_output(train)
    return story, guide


def inference_setup(config: TrainConfig, story, guide, splits) -> Setup:
    """What the configuration's inference kind (or another registered kind) is built from."""
    return Setup(
        story,
        guide,
        objective=objective_of(config.story, config.model, config.inference, guide),
        training=Training(**config.inference.training(), **config.optimizer.training()),
        refinement=Refinement(lr=config.inference.refinement_lr),
        data=splits,
        batch_size=config.run.batch_size,
        seed=config.run.seed,
    )


def inspection_setup(
    config: TrainConfig, trained, splits, sampling: Sampling, refinement_lr: float | None = None
) -> Setup:
    """The setup of the kinds built over a trained run's story and guide to inspect its
    posterior (``fabula diagnose``): never trained, refining the ``trained`` object's λ with the
    run's step size (or ``refinement_lr``), sampling as ``sampling`` says."""
    lr = config.inference.refinement_lr if refinement_lr is None else refinement_lr
    return replace(
        inference_setup(config, trained.story, trained.guide, splits),
        training=Training(learn_story=False),
        refinement=Refinement(lr=lr),
        trained=trained,
        sampling=sampling,
    )
