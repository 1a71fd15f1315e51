"""What every inference object offers, and the protocol of those that train.

An inference object pairs a story with where its variational parameters λ come from (a λ
source, :mod:`fabula.inference.sources`) or with a sampler (:class:`~fabula.inference.MCMC`).
Evaluation reads ``story``, ``guide`` and :meth:`Inference.local_params`; only objects that
train (:class:`Trainable`) offer ``step`` and ``fit``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from fabula.errors import UsageError
from fabula.traces import trace_guide


class Inference:
    """A story and a λ source: ``local_params(batch)`` gives each datum's λ, ``posterior`` draws
    from :math:`q_\\lambda`. ``spec`` is the registry spec it was built from
    (:mod:`fabula.inference.kinds`; ``None`` when built directly); a run saves it in its
    configuration, which rebuilds the object as the kind that was trained."""

    spec: str | None = None

    def __init__(self, story, source=None):
        self.story = story
        self.source = source
        self.guide = source.guide if source is not None else None

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        """The variational parameters λ this object uses for ``batch``."""
        if self.source is None:
            raise UsageError(
                f"{type(self).__name__} has no variational parameters λ (it samples, or was built without a λ source)"
            )
        return self.source.local_params(batch)

    @torch.no_grad()
    def posterior(self, batch, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of each latent site of the guide from q_λ: ``{site: [S, B, ...]}``
        (a site the story sums out has none)."""
        trace = trace_guide(self.guide, batch, num_samples, self.local_params(batch))
        return {site: trace.nodes[site]["value"] for site in self.story.latent_sites if site in trace.nodes}

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module whose weights a checkpoint must hold."""
        out = {"story": self.story}
        if self.guide is not None:
            out["guide"] = self.guide
        if self.source is not None:
            out.update(self.source.modules())
        return out


@runtime_checkable
class Trainable(Protocol):
    """An inference object that fits its story: one update per batch, per-epoch hooks, and a
    training state that a checkpoint restores exactly."""

    num_steps: int

    def begin(self, data) -> None: ...

    def step(self, batch) -> dict[str, float]: ...

    def end_epoch(self) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class RankLocalState(Protocol):
    """A trainable object with training state of its own on each data-parallel rank, which DDP
    does not keep alike (persistent CD's chains): a run's checkpoint stores every rank's
    :meth:`local_state` beside the ranks' random states, and a run resumed with as many ranks
    gives each rank its own back (:func:`fabula.run.resume.restore_training_state`)."""

    def local_state(self) -> object:
        """This rank's state (tensors on the CPU, so that it travels to rank 0 as it is)."""
        ...

    def load_local_state(self, state) -> None:
        """Take ``state`` (:meth:`local_state`'s, or ``None``: start it afresh), refusing with a
        ``ValueError`` one that does not fit."""
        ...
