r"""Contrastive divergence for undirected stories: CD-k and persistent CD.

The log-likelihood gradient of a document under an undirected story
(:class:`~fabula.models.capabilities.Undirected`, :math:`\log p(v) = -F(v) - \log Z_D`) is

.. math:: \nabla_\theta \log p(v) = -\nabla_\theta F(v) + E_{p_D(v')}[\nabla_\theta F(v')],

and CD replaces the intractable expectation by a sample :math:`v^-` of a short Gibbs chain
(:math:`h \sim p(h \mid v)`, :math:`v \sim p(v \mid h)`, with the document's length :math:`D`):
started at the datum for CD-k, at the chain's state after the previous update for persistent CD.
The update descends the free-energy gap :math:`F(v) - F(v^-)` (:math:`v^-` held fixed) plus a
weight cost :math:`\tfrac{\lambda}{2} \|W\|^2` on the weight matrices (not the biases). Written by
hand: no library provides CD for Pyro stories.

References: G. Hinton. Training Products of Experts by Minimizing Contrastive Divergence.
Neural Computation 2002. M. Carreira-Perpiñán, G. Hinton. On Contrastive Divergence Learning.
AISTATS 2005. T. Tieleman. Training Restricted Boltzmann Machines using Approximations to the
Likelihood Gradient. ICML 2008. R. Salakhutdinov, G. Hinton. Replicated Softmax: an Undirected
Topic Model. NIPS 2009. G. Hinton. A Practical Guide to Training Restricted Boltzmann Machines.
UTML TR 2010-003.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fabula.errors import SettingsError
from fabula.inference.base import Inference
from fabula.inference.trainer import EpochDecay, Trainer, fit
from fabula.models.capabilities import Undirected
from fabula.settings import COUNT, NONNEGATIVE, Range


@dataclass(frozen=True)
class ContrastiveObjective:
    r"""What CD minimises beyond the free-energy gap, and how its chains and updates change
    over training.

    :param weight_cost: :math:`\lambda` of the weight cost :math:`\tfrac\lambda2 \|W\|^2`.
    :param max_steps: the Gibbs steps :math:`k` rise from those of the spec (``cd:K``) to this,
        one more every ``increase_every`` updates (``None``: fixed :math:`k`).
    :param momentum: the momentum of the first ``momentum_epochs`` epochs, ``final_momentum``
        after them (an optimizer with momentum, SGD, is needed where either is nonzero).

    Salakhutdinov & Hinton (2009) train the RSM on mini-batches of 100 documents with CD whose
    Gibbs steps start at 1 and rise gradually to 5 over 100,000 updates; they give no optimizer,
    learning rate, momentum, weight cost or pace of the rise. The recipe's defaults (``fabula
    train rsm``) take the pace as one more step every 20,000 updates, the weight cost 0.0002 of
    Hinton & Salakhutdinov's RBM code (Science 2006), and Adam (lr 0.001) without a momentum
    schedule: with SGD the visible biases and the weights of frequent words, whose gradients grow
    with the document's length, need a far smaller step size than the rest (on 20 Newsgroups,
    SGD at 0.001, 0.003, 0.01 or 0.05 with that code's momentum, 0.5 for 5 epochs then 0.9, kept
    the reconstruction error at its unigram start, 7.10 nats per token, for 8 epochs, or made it
    worse; Adam at 0.001 lowered it to 6.74 in the same 8). The SGD recipe stays available
    (``optimizer="sgd"`` and the momenta here). The step size matters as much: on 20 Newsgroups,
    decaying it by 0.97 an epoch over the second half of 100 epochs (``lr_decay``,
    ``decay_after`` of the trainer) took the test perplexity of CD-1 rising to 5 from 1019.5 to
    947.3 (AIS; ``benchmarks/history_20news.py``).
    """

    weight_cost: float = 0.0
    max_steps: int | None = None
    increase_every: int | None = None
    momentum: float = 0.0
    final_momentum: float = 0.0
    momentum_epochs: int = 0

    def __post_init__(self):
        NONNEGATIVE.check("weight_cost", self.weight_cost)
        for name in ("max_steps", "increase_every"):
            if getattr(self, name) is not None:
                COUNT.check(name, getattr(self, name), int)
        if (self.max_steps is None) != (self.increase_every is None):
            raise SettingsError("max_steps and increase_every go together (both or neither)")
        for name in ("momentum", "final_momentum"):
            Range(at_least=0, below=1).check(name, getattr(self, name))
        NONNEGATIVE.check("momentum_epochs", self.momentum_epochs, int)

    def steps(self, k: int, updates: int) -> int:
        """The Gibbs steps of the update after ``updates`` updates, starting from ``k``."""
        if self.max_steps is None or self.max_steps <= k:
            return k
        return min(self.max_steps, k + updates // self.increase_every)

    def momentum_at(self, epoch: int) -> float:
        """The momentum of (0-based) ``epoch``."""
        return self.momentum if epoch < self.momentum_epochs else self.final_momentum

    def penalty(self, story) -> torch.Tensor:
        """:math:`\\tfrac\\lambda2 \\|W\\|^2` over the story's weight matrices (parameters of 2 or more dimensions)."""
        squares = [p.pow(2).sum() for p in story.parameters() if p.dim() > 1]
        return 0.5 * self.weight_cost * torch.stack(squares).sum()


def refuse_directed(story) -> None:
    """Refuse a story that is not undirected, naming the kinds that train it."""
    if not isinstance(story, Undirected):
        raise SettingsError(
            f"contrastive divergence trains an undirected story (free energy and Gibbs conditionals); "
            f"{type(story).__name__} is not one: train it with a variational kind (vae, svi:K, ...)"
        )


@torch.no_grad()
def reconstruction_error(story, counts: torch.Tensor) -> torch.Tensor:
    r"""``[B]``: :math:`-\log p(v \mid \bar h)` of each document's tokens, with
    :math:`\bar h = E[h \mid v]` (a mean-field reconstruction, deterministic; nats per datum)."""
    h = story.hidden_given_visible(counts).mean
    return -story.visible_given_hidden(h, counts.sum(-1)).log_prob(counts)


class ContrastiveDivergence(Inference):
    r"""CD-k (``persistent=False``) or persistent CD (``persistent=True``) of an undirected story.

    Each update runs :math:`k` full Gibbs steps per document of the batch, at the document's
    length :math:`D`: CD-k from the datum (:math:`h \sim p(h \mid v)`, then :math:`k` times
    :math:`v \sim p(v \mid h)`, :math:`h \sim p(h \mid v)`, the last :math:`v` being
    :math:`v^-`); persistent CD from the hidden state its chain was left in, one chain per
    position of the batch (chains are added, started from :math:`p(h \mid v)` of the batch's
    documents, when a batch is larger than any before). A chain moves with the length of the
    document at its position, so each update samples every length the data has. The chains'
    states, the update count (which sets :math:`k` by ``objective``'s schedule) and the epoch
    count (which sets the momentum) are training state: a resumed fit ends where an uninterrupted
    one would.

    The step descends ``F(v) - F(v^-) + penalty`` with the trainer's optimizer
    (:class:`~fabula.inference.trainer.Trainer`: Adam by default, gradient clipping, learning-rate
    schedule). :meth:`step` reports ``loss``, the free-energy gap :math:`F(v) - F(v^-)` per datum
    (without the weight cost; no likelihood: negative while the chains' samples are less
    probable than the data, near zero once they keep up), ``reconstruction`` (:func:`reconstruction_error` per token) and
    ``gibbs_steps`` (:math:`k`); :meth:`end_epoch` the ``lr`` and ``momentum`` the epoch ran with.
    It has no variational parameters (``source`` is ``None``); :meth:`posterior` draws the exact
    :math:`p(h \mid v)`.
    """

    def __init__(
        self,
        story,
        k: int = 1,
        persistent: bool = False,
        *,
        objective: ContrastiveObjective | None = None,
        optimizer="adam",
        optim_args: dict | None = None,
        clip_norm: float | None = None,
        lr_decay: float = 1.0,
        decay_after: int = 0,
    ):
        refuse_directed(story)
        if objective is not None and not isinstance(objective, ContrastiveObjective):
            raise SettingsError(
                f"contrastive divergence takes a ContrastiveObjective, got {type(objective).__name__}"
            )
        COUNT.check("k (Gibbs steps)", k, int)
        super().__init__(story)
        self.k, self.persistent = k, persistent
        self.objective = objective or ContrastiveObjective()
        params = [p for p in story.parameters() if p.requires_grad]
        self.trainer = Trainer(
            {"story": params}, optimizer, optim_args, clip_norm, EpochDecay(lr_decay, decay_after)
        )
        self.num_steps = 0
        self.epochs = 0
        self.chains: torch.Tensor | None = None
        wanted = max(self.objective.momentum, self.objective.final_momentum)
        for optimizer in self.trainer.optimizers.values():
            if wanted and "momentum" not in optimizer.defaults:
                raise SettingsError(
                    f"momentum {wanted} needs an optimizer with momentum (sgd), not "
                    f"{type(optimizer).__name__}; or set the momenta to 0"
                )
        self._set_momentum(self.objective.momentum_at(0))

    def _set_momentum(self, momentum: float) -> None:
        for optimizer in self.trainer.optimizers.values():
            for group in optimizer.param_groups:
                if "momentum" in group:
                    group["momentum"] = momentum

    @property
    def gibbs_steps(self) -> int:
        """:math:`k` of the next update."""
        return self.objective.steps(self.k, self.num_steps)

    @torch.no_grad()
    def negative(self, counts: torch.Tensor) -> torch.Tensor:
        """:math:`v^-` for each document of ``counts`` after :attr:`gibbs_steps` Gibbs steps
        (advancing the persistent chains)."""
        story, lengths, k = self.story, counts.sum(-1), self.gibbs_steps
        if self.persistent:
            have = 0 if self.chains is None else len(self.chains)
            if have < len(counts):
                new = story.hidden_given_visible(counts[have:]).sample()
                self.chains = new if self.chains is None else torch.cat([self.chains, new])
            h = self.chains[: len(counts)]
        else:
            h = story.hidden_given_visible(counts).sample()
        for i in range(k):
            v = story.visible_given_hidden(h, lengths).sample()
            if i < k - 1 or self.persistent:
                h = story.hidden_given_visible(v).sample()
        if self.persistent:
            self.chains[: len(counts)] = h
        return v

    def step(self, batch) -> dict[str, float]:
        k = self.gibbs_steps
        counts = batch.counts
        negative = self.negative(counts)
        gaps = []

        def loss():  # computed by the trainer (under autocast, through DDP: fabula.distributed)
            gaps.append((self.story.free_energy(counts) - self.story.free_energy(negative)).mean())
            return gaps[0] + self.objective.penalty(self.story) if self.objective.weight_cost else gaps[0]

        self.trainer.descend(loss, "story", step=self.num_steps + 1)
        gap = gaps[0]
        self.num_steps += 1
        tokens = batch.lengths.sum()
        reconstruction = reconstruction_error(self.story, counts).sum() / tokens
        return {"loss": gap.item(), "reconstruction": reconstruction.item(), "gibbs_steps": k}

    def end_epoch(self) -> dict[str, float]:
        momentum = self.objective.momentum_at(self.epochs)
        self.epochs += 1
        self._set_momentum(self.objective.momentum_at(self.epochs))
        return {**self.trainer.end_epoch(), "momentum": momentum}

    def begin(self, data) -> None:
        """Nothing to prepare: the chains start from the first batch."""

    def fit(self, data, epochs: int = 1, batch_size: int = 64, seed: int = 0, **settings) -> list[dict]:
        """Train on ``data`` with a progress bar per epoch (:func:`~fabula.inference.trainer.fit`)."""
        return fit(self, data, epochs, batch_size, seed, **settings)

    @torch.no_grad()
    def posterior(self, batch, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of the exact :math:`p(h \\mid v)`: ``{"h": [S, B, F]}``."""
        return {"h": self.story.hidden_given_visible(batch.counts).sample((num_samples,))}

    def state_dict(self) -> dict:
        """The training state beyond the story's weights: update and epoch counts, the persistent
        chains (``None`` for CD-k, or before the first update; under data parallelism this
        rank's, every rank's being kept by :meth:`local_state`) and the trainer."""
        return {
            "num_steps": self.num_steps,
            "epochs": self.epochs,
            "chains": self.chains,
            "trainer": self.trainer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_local_state(state["chains"])
        self.num_steps, self.epochs = int(state["num_steps"]), int(state["epochs"])
        self.trainer.load_state_dict(state["trainer"])
        self._set_momentum(self.objective.momentum_at(self.epochs))

    def local_state(self) -> torch.Tensor | None:
        """This rank's persistent chains, on the CPU (:class:`~fabula.inference.base.RankLocalState`):
        the chains of data-parallel ranks differ, each drawn with its rank's random stream."""
        return None if self.chains is None else self.chains.cpu()

    def load_local_state(self, chains: torch.Tensor | None) -> None:
        """Take ``chains`` as this rank's persistent chains (``None``: started afresh from the next
        batch's documents), refusing chains for CD-k or of another width."""
        if chains is not None:
            if not self.persistent:
                raise ValueError("the state holds persistent chains and this is CD-k")
            story = self.story
            probe = story.hidden_given_visible(torch.zeros(1, story.vocab_size, device=story.device)).mean
            if (
                not isinstance(chains, torch.Tensor)
                or chains.dim() != 2
                or chains.shape[1] != probe.shape[-1]
            ):
                raise ValueError(f"persistent chains must be a [chains, {probe.shape[-1]}] tensor")
            chains = chains.to(probe.device, probe.dtype)
        self.chains = chains


def contrastive(setup, steps: int, persistent: bool) -> ContrastiveDivergence:
    """The ``cd:K`` / ``pcd:K`` kind of the registry from a :class:`~fabula.inference.kinds.Setup`:
    its objective (the story recipe's :class:`ContrastiveObjective`) and trainer settings."""
    refuse_directed(setup.story)  # the reason that comes before any setting's
    training = setup.training.arguments()
    if training.pop("annealing") is not None or training.pop("word_dropout"):
        raise SettingsError("KL annealing and word dropout do not apply to contrastive divergence")
    if not training.pop("learn_story"):
        raise SettingsError("contrastive divergence fits the story itself; it cannot leave it fixed")
    return ContrastiveDivergence(setup.story, steps, persistent, objective=setup.objective, **training)
