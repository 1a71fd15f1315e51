"""The story contract: a Pyro model of how text is generated."""

from __future__ import annotations

import itertools

import pyro
import torch
from pyro.nn import PyroModule

from fabula.rebuild import Rebuildable

# A process-wide Pyro setting, made once when this module is first imported (so by any import
# of fabula.models): from then on every PyroModule in the process, fabula's or not, keeps its
# parameters in the module itself instead of Pyro's global parameter store (pyro.param and
# pyro.get_param_store() no longer see them). fabula needs it because its stories and guides are
# modules that own their weights: two stories in one process (a trained model and the corpus
# generator, say) may share attribute names without sharing weights, and a checkpoint is their
# state dicts. Code in the same process that relies on the global store is affected too.
pyro.settings.set(module_local_params=True)

#: The dimension of the ``"data"`` plate: the rightmost batch dimension of every local site.
DATA_DIM = -1
"""The batch dimension of the ``"data"`` plate; outer plates (particles, chains) sit left of it."""


class Story(Rebuildable, PyroModule):
    """A generative story (Pyro model).

    Subclasses implement :meth:`model`: global parameters are module parameters and buffers;
    local latents are ``pyro.sample`` sites inside :meth:`data_plate` with their event
    dimensions declared (``.to_event``); observations are sampled with ``obs=`` from a
    distribution that can also draw them, shaped by the batch (documents of the batch's lengths,
    sentences as long as its longest; :mod:`fabula.distributions`). The site names in
    :attr:`latent_sites` are the contract with guides, evaluation and diagnostics.

    As in any Pyro model, ``obs=`` conditions: ``Predictive(story.model, ...)`` returns the batch's
    observation. Pyro's :func:`~pyro.poutine.uncondition` makes the observation absent, and the
    story then generates it. A guide still reads the batch (Pyro calls model and guide with the
    same arguments, and an amortized guide encodes the observation), so posterior predictive
    draws are ``Predictive(poutine.uncondition(story.model), guide=guide, num_samples=S)(batch)``,
    and prior predictive draws the same without the guide.
    """

    latent_sites: tuple[str, ...] = ()
    reads: str | None = None
    """The data the story generates: ``"documents"`` (bags of words, batches with ``counts`` and
    ``lengths``) or ``"sentences"`` (token sequences); what a run feeds it from a corpus."""
    settings_class: type | None = None
    """A dataclass of the constructor's keyword arguments but ``vocab_size``, whose fields carry
    their help and ranges (:func:`fabula.settings.setting`), from which a run makes the story's
    flags; ``None``: they are read from the constructor's typed parameters."""
    guide_class: type | None = None
    """The guide a run builds for the story (a :class:`~fabula.guides.Guide` with a
    ``for_story(story, batch)`` class method); ``None``: one chosen by its latent sites'
    supports (:class:`~fabula.guides.SupportGuide`)."""

    def __init__(self):
        super().__init__(name="story")

    @staticmethod
    def data_plate(batch) -> pyro.plate:
        """The plate over independent data, always at :data:`DATA_DIM`."""
        return pyro.plate("data", batch.size, dim=DATA_DIM)

    def model(self, batch) -> None:
        raise NotImplementedError

    def forward(self, batch) -> None:
        return self.model(batch)

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        """Draw ``num`` joint samples of the local latents from the prior."""
        raise NotImplementedError

    def num_tokens(self, batch) -> torch.Tensor | None:
        """Tokens per datum for perplexity, or ``None`` when the data are not text."""
        return None

    def sample_cost(self, batch) -> int:
        """Elements one joint sample of the batch's latents materialises in :meth:`model`
        (sizes the chunks of importance-weighted evaluation); default: the inputs' size."""
        return batch.inputs.numel()

    @property
    def device(self) -> torch.device:
        return next(itertools.chain(self.buffers(), self.parameters())).device
