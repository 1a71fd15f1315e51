"""Update policies: which parameters step on which loss, and when.

A policy names its parameter groups (:meth:`Joint.groups`; the trainer builds one optimizer each) and
makes one training step (:meth:`Joint.step`) of a :class:`~fabula.inference.VariationalInference`:

* :class:`Joint` -- story and λ source descend the objective together;
* :class:`StoryThenGuide` -- the story at the refined λ, then the encoder on its own loss
  (VAE+SVI: Krishnan et al. 2018, Hjelm et al. 2016);
* :class:`Aggressive` -- He et al.'s (2019) inner loop of encoder steps before each story step.
"""

from __future__ import annotations

import torch
from torch.distributions import kl_divergence

from fabula import distributed
from fabula.data.corpus import DataParallel
from fabula.errors import SettingsError, UsageError
from fabula.evaluation.bounds import mutual_information
from fabula.inference.refinement import negative_elbo
from fabula.traces import trace_guide


class Joint:
    """One optimizer over the story and the λ source's parameters; one step on the objective."""

    def groups(self, inference) -> dict[str, list]:
        return {"joint": inference.story_parameters() + inference.source.trainable_parameters()}

    def begin(self, data) -> None:
        """The training data, before the first step (for policies that draw batches of their own)."""

    def step(self, inference, batch) -> dict[str, float]:
        return {
            "loss": inference.trainer.descend(
                lambda: inference.loss(batch), "joint", step=inference.num_steps + 1
            )
        }

    def end_epoch(self, inference) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StoryThenGuide(Joint):
    r"""The story steps on the objective at the source's λ (refined :math:`\lambda_K`, held
    fixed), then the guide's encoder on

    * ``variant="krishnan"``: the ELBO at :math:`\lambda_0 = \mathrm{enc}(x)` (Krishnan et al. 2018);
    * ``variant="hjelm"``: :math:`KL(q_{\lambda_0} \| q_{\lambda_K})`, :math:`\lambda_K` fixed
      (Hjelm et al. 2016).

    References:
      R. Krishnan, D. Liang, M. Hoffman. On the challenges of learning with inference networks on
      sparse, high-dimensional data. AISTATS 2018.
      D. Hjelm et al. Iterative Refinement of the Approximate Posterior for Directed Belief
      Networks. NeurIPS 2016.
    """

    VARIANTS = ("krishnan", "hjelm")

    def __init__(self, variant: str = "krishnan"):
        if variant not in self.VARIANTS:
            raise SettingsError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        self.variant = variant

    def groups(self, inference) -> dict[str, list]:
        """The story's parameters (none with ``learn_story=False``: the encoder alone trains) and
        the guide's."""
        return {
            "story": inference.story_parameters() if inference.learn_story else [],
            "guide": [p for p in inference.guide.parameters() if p.requires_grad],
        }

    def step(self, inference, batch) -> dict[str, float]:
        trainer, step = inference.trainer, inference.num_steps + 1
        value = trainer.descend(lambda: inference.loss(batch), "story", step=step)
        trainer.descend(lambda: self.encoder_loss(inference, batch), "guide", step=step)
        return {"loss": value}

    def encoder_loss(self, inference, batch):
        """The encoder's loss per datum, of :attr:`variant`."""
        start = inference.guide.local_params(batch)
        if self.variant == "krishnan":
            loss = negative_elbo(inference.story, inference.guide, batch, start, inference.bound)
        else:
            q0 = trace_guide(inference.guide, batch, 1, start)
            qk = trace_guide(inference.guide, batch, 1, inference.training_params(batch))
            loss = sum(
                kl_divergence(q0.nodes[s]["fn"], qk.nodes[s]["fn"]).sum()
                for s in inference.story.latent_sites
            )
        return loss / batch.size


class Aggressive(Joint):
    r"""He et al.'s aggressive encoder training against the lagging inference network.

    While *aggressive*, each step updates the λ source alone on fresh batches of the training
    data (the data ``fit`` trains on, or given to :meth:`begin`; at most
    ``inner_steps``, stopping once the loss summed over ``patience`` steps no longer falls),
    then the story once on the given batch. After each epoch the mutual information
    :math:`I_q(x; z)` is estimated on ``validation``
    (:func:`~fabula.evaluation.bounds.mutual_information`); once it stops rising, steps are joint.
    The inner loop's batches are passes over ``data`` in the orders ``data.order(seed,
    7919 (p + 1))`` of pass ``p``, restarted at each epoch's end, so a resumed run draws the same.
    Under data parallelism the inner loop's stop is decided on the loss averaged over the ranks
    and the MI is estimated on every rank's shard of ``validation`` and reduced, so that the
    ranks step alike.

    References: J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick. Lagging Inference Networks
    and Posterior Collapse in Variational Autoencoders. ICLR 2019.
    """

    def __init__(
        self,
        validation,
        batch_size: int = 32,
        inner_steps: int = 100,
        patience: int = 15,
        seed: int = 0,
    ):
        if inner_steps < 1 or patience < 1:
            raise SettingsError(f"inner_steps and patience must be >= 1, got {inner_steps} and {patience}")
        self.data, self.validation, self.batch_size = None, validation, batch_size
        self.inner_steps, self.patience, self.seed = inner_steps, patience, seed
        self.aggressive = True
        self.best_mi = float("-inf")
        self._stream = None
        self._pass = 0

    def groups(self, inference) -> dict[str, list]:
        if not inference.story.latent_sites:
            raise SettingsError(
                "aggressive encoder training needs a story with latent sites (it has no latent sites)"
            )
        if not inference.learn_story:
            raise SettingsError("aggressive training trains the story; learn_story=False does not apply")
        return {"story": inference.story_parameters(), "guide": inference.source.trainable_parameters()}

    def begin(self, data) -> None:
        self.data = data

    def _next_batch(self, device):
        if self.data is None:
            raise UsageError(
                "aggressive updates draw their inner batches from the training data: train with "
                "fit(data), or call begin(data) before stepping"
            )
        while True:
            if self._stream is None:
                self._stream = self.data.batches(
                    self.batch_size,
                    shuffle=True,
                    seed=self.seed,
                    epoch=7919 * (self._pass + 1),
                    device=device,
                )
                self._pass += 1
            batch = next(self._stream, None)
            if batch is not None:
                return batch
            self._stream = None

    def step(self, inference, batch) -> dict[str, float]:
        trainer, step = inference.trainer, inference.num_steps + 1
        inner = 0
        if self.aggressive:
            best, window = float("inf"), 0.0
            for inner in range(1, self.inner_steps + 1):
                inner_batch = self._next_batch(inference.story.device)
                window += trainer.descend(lambda b=inner_batch: inference.loss(b), "guide", step=step)
                if inner % self.patience == 0:
                    if window >= best:
                        break
                    best, window = window, 0.0
            value = trainer.descend(lambda: inference.loss(batch), "story", step=step)
        else:
            value = trainer.descend(lambda: inference.loss(batch), "story", "guide", step=step)
        return {"loss": value, "inner_steps": float(inner)}

    @torch.no_grad()
    def end_epoch(self, inference) -> dict[str, float]:
        total, count = 0.0, 0
        sites, parallel = inference.story.latent_sites, isinstance(self.data, DataParallel)
        validation = (
            self.validation.shard(self.data.rank, self.data.world_size) if parallel else self.validation
        )
        for batch in validation.batches(self.batch_size, device=inference.story.device):
            trace = trace_guide(inference.guide, batch, 1, inference.local_params(batch))
            total += float(mutual_information(trace, sites)) * batch.size
            count += batch.size
        if parallel:  # every rank decides on the same MI
            total, count = distributed.all_sum(total, count)
        mi = total / count
        self._stream, self._pass = None, self._pass + 1
        if self.aggressive and mi <= self.best_mi:
            self.aggressive = False
        self.best_mi = max(self.best_mi, mi)
        return {"validation_mi": mi, "aggressive": float(self.aggressive)}

    def state_dict(self) -> dict:
        return {"aggressive": self.aggressive, "best_mi": self.best_mi, "pass": self._pass}

    def load_state_dict(self, state: dict) -> None:
        self.aggressive, self.best_mi, self._pass = state["aggressive"], state["best_mi"], state["pass"]
        self._stream = None
