"""Per-epoch callbacks of a run, declared by its story's recipe: what each measures after an
epoch (added to the epoch's metrics) and draws into the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fabula.evaluation.mixture import mixture_diagnostics
from fabula.evaluation.topic_quality import DIVERSITY_TOP, npmi, topic_diversity
from fabula.inference.contrastive import reconstruction_error
from fabula.models.capabilities import HasComponents, HasTopics
from fabula.plots import plot_component_means


@dataclass
class Epoch:
    """What a per-epoch callback sees: the run's inference object, the evaluated split, the
    vocabulary words, the run directory and the metrics so far (this epoch's last)."""

    inference: object
    data: object
    words: list[str]
    directory: Path
    history: list[dict]


class MixtureDiagnostics:
    """Mode-collapse diagnostics each epoch (:func:`~fabula.evaluation.mixture_diagnostics`)
    and the components' means drawn over the epochs (``components.png``)."""

    def measure(self, epoch: Epoch) -> dict:
        diagnostics = mixture_diagnostics(epoch.inference, epoch.data)
        return {
            **{f"eval_{k}": v for k, v in diagnostics.items()},
            "component_means": epoch.inference.story.component_means.tolist(),
        }

    def draw(self, epoch: Epoch) -> None:
        plot_component_means(epoch.history, epoch.directory / "components.png")


class Topics:
    """The top words of each latent dimension, written to ``topics.txt`` each epoch, and their
    quality on the evaluated split: ``eval_npmi``, the mean NPMI coherence of the topics' top 10
    words (:func:`~fabula.evaluation.npmi`), and ``eval_topic_diversity``, the share of unique
    words among their top 25 (:func:`~fabula.evaluation.topic_diversity`); fewer where the
    vocabulary is smaller."""

    def measure(self, epoch: Epoch) -> dict:
        vocab = len(epoch.words)
        ids = epoch.inference.story.topic_words(min(DIVERSITY_TOP, vocab))
        return {
            "eval_npmi": float(npmi(ids, epoch.data, min(10, vocab)).mean()),
            "eval_topic_diversity": topic_diversity(ids, min(DIVERSITY_TOP, vocab)),
        }

    def draw(self, epoch: Epoch) -> None:
        rows = epoch.inference.story.topics(epoch.words, 10)
        (epoch.directory / "topics.txt").write_text(
            "".join(f"z[{j}]\t" + " ".join(words) + "\n" for j, words in enumerate(rows))
        )


class Reconstruction:
    """An undirected story's held-out fit each epoch, where no cheap bound exists:
    ``eval_reconstruction_error``, nats per token of the evaluated split under its mean-field
    reconstruction (:func:`~fabula.inference.contrastive.reconstruction_error`)."""

    def measure(self, epoch: Epoch) -> dict:
        story, nats, tokens = epoch.inference.story, 0.0, 0.0
        for batch in epoch.data.batches(512, device=story.device):
            nats += float(reconstruction_error(story, batch.counts).sum())
            tokens += float(batch.lengths.sum())
        return {"eval_reconstruction_error": nats / tokens}

    def draw(self, epoch: Epoch) -> None:
        pass


class ByCapability:
    """The callbacks a user's story declares by what it can do, decided on the story itself:
    :class:`Topics` for a story with topics, :class:`MixtureDiagnostics` for one with components."""

    def _chosen(self, epoch: Epoch) -> list:
        story = epoch.inference.story
        return [
            c
            for c, protocol in ((Topics(), HasTopics), (MixtureDiagnostics(), HasComponents))
            if isinstance(story, protocol)
        ]

    def measure(self, epoch: Epoch) -> dict:
        figures = {}
        for callback in self._chosen(epoch):
            figures.update(callback.measure(epoch))
        return figures

    def draw(self, epoch: Epoch) -> None:
        for callback in self._chosen(epoch):
            callback.draw(epoch)
