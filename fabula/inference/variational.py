r"""Variational inference as a composition: a story, a λ source, an objective, an update policy.

.. math:: \mathcal L(\theta, \lambda) = \sum_b E_{q_{\lambda_b}(z)}[\log p_\theta(x_b\mid z)]
          - \beta_t\, KL\big(q_{\lambda_b}(z) \,\|\, p(z)\big)

Where λ comes from (:mod:`~fabula.inference.sources`), which loss is minimised (a Pyro ``ELBO``:
:class:`~fabula.inference.mean_field.MeanFieldELBO` by default, ``Trace_ELBO``, ``TraceEnum_ELBO``, free bits, DGMVAE's
dispersion) and which parameters step when (:mod:`~fabula.inference.updates`) are three
independent choices; any combination is one :class:`VariationalInference`. The presets
(:mod:`~fabula.inference.presets`) name the combinations of the literature.

References: D. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from __future__ import annotations

import torch
from pyro.infer import ELBO

from fabula.errors import SettingsError, UsageError
from fabula.inference.annealing import Constant, ScaleLatents, annealed
from fabula.inference.base import Inference
from fabula.inference.objectives import bound_of
from fabula.inference.trainer import EpochDecay, Trainer, fit
from fabula.inference.updates import Joint
from fabula.inference.word_dropout import word_dropout
from fabula.models.capabilities import Undirected


class VariationalInference(Inference):
    r"""Fits a story and a λ source on ``objective``, with an update policy.

    :param source: a λ source (:class:`~fabula.inference.sources.Encoded`, ``Tabulated``,
        ``Refined``, ...).
    :param objective: a Pyro ``ELBO`` (default :class:`~fabula.inference.mean_field.MeanFieldELBO`, analytic KL); its
        ``bound`` (:func:`~fabula.inference.objectives.bound_of`) is what refinement and the
        encoder losses of the update policies use.
    :param annealing: a schedule of the step count giving the KL weight :math:`\beta_t`
        (:mod:`~fabula.inference.annealing`), applied as an effect handler.
    :param word_dropout: rate of decoder input words replaced by ``<unk>`` in training steps.
    :param updates: the update policy (default :class:`~fabula.inference.updates.Joint`).
    :param optimizer: the trainer's settings (:class:`~fabula.inference.trainer.Trainer`), as
        are ``optim_args``, ``clip_norm``, ``lr_decay`` and ``decay_after``; gradients are
        clipped by global norm.
    :param learn_story: ``False`` holds the story's parameters fixed.

    :meth:`step` reports the loss per datum (the annealed negative objective over the batch size).
    """

    def __init__(
        self,
        story,
        source,
        *,
        objective: ELBO | None = None,
        annealing=None,
        word_dropout: float = 0.0,
        updates=None,
        optimizer="adam",
        optim_args: dict | None = None,
        clip_norm: float | None = None,
        lr_decay: float = 1.0,
        decay_after: int = 0,
        learn_story: bool = True,
    ):
        super().__init__(story, source)
        if isinstance(story, Undirected):
            raise UsageError(
                f"{type(story).__name__} is undirected (no Pyro model to bound): train it with cd:K or pcd:K, "
                f"not {type(self).__name__}"
            )
        if not 0.0 <= word_dropout <= 1.0:
            raise SettingsError(f"word dropout rate must be in [0, 1], got {word_dropout}")
        self.objective = objective if objective is not None else bound_of(None)
        self.bound = bound_of(self.objective)
        self.annealing = annealing or Constant()
        self.word_dropout = word_dropout
        self.learn_story = learn_story
        self.updates = updates or Joint()
        self.trainer = Trainer(
            self.updates.groups(self), optimizer, optim_args, clip_norm, EpochDecay(lr_decay, decay_after)
        )
        self.num_steps = 0

    def story_parameters(self) -> list:
        """The story's parameters that training updates (none with ``learn_story=False``)."""
        return [p for p in self.story.parameters() if p.requires_grad] if self.learn_story else []

    @property
    def params(self) -> list:
        """Every parameter a step may update."""
        return self.trainer.parameters

    def training_params(self, batch) -> dict[str, torch.Tensor]:
        r"""λ for a training step: the source's, any refinement in it run on the step's annealed
        bound (latent terms weighted by :math:`\beta_t`, as Kim et al. refine under annealing),
        so that a refined :math:`\lambda_K` optimises the objective the step descends. Refined
        on the full bound instead, :math:`\lambda_K` would pull q toward the :math:`\beta = 1`
        optimum while the step rewards the sharper :math:`\beta_t` one, and SA-VAE's gradient
        through the K steps fights that pull (its loss then rises as :math:`\beta_t` grows).
        Evaluation refines on the full bound (:meth:`local_params`)."""
        with ScaleLatents(self.annealing(self.num_steps)):
            return self.local_params(batch)

    def loss(self, batch):
        """The annealed negative objective per datum of a training step (word dropout applied).

        λ is computed before the guide is traced, so that λ sources which run Pyro themselves
        (refinement) stay out of the trace."""
        beta = self.annealing(self.num_steps)
        params = self.training_params(batch)
        if self.word_dropout:
            batch = word_dropout(batch, self.word_dropout)

        def guide(b):
            return self.guide(b, params)

        loss = self.objective.differentiable_loss(
            annealed(self.story.model, beta), annealed(guide, beta), batch
        )
        return loss / batch.size

    def step(self, batch) -> dict[str, float]:
        if not self.trainer.optimizers:
            raise UsageError("this inference object has nothing to train (a fixed story and no λ to learn)")
        beta = self.annealing(self.num_steps)
        metrics = self.updates.step(self, batch)
        self.num_steps += 1
        return {**metrics, "beta": beta}

    def end_epoch(self) -> dict[str, float]:
        """The update policy's per-epoch decisions, then the learning-rate schedule's step."""
        return {**self.updates.end_epoch(self), **self.trainer.end_epoch()}

    def begin(self, data) -> None:
        """Name the training data to the update policy (for steps taken without :meth:`fit`)."""
        self.updates.begin(data)

    def fit(self, data, epochs: int = 1, batch_size: int = 64, seed: int = 0, **settings) -> list[dict]:
        """Train on ``data`` with a progress bar per epoch (:func:`~fabula.inference.trainer.fit`)."""
        return fit(self, data, epochs, batch_size, seed, **settings)

    def state_dict(self) -> dict:
        """The training state beyond the modules' weights: step count, trainer, update policy."""
        return {
            "num_steps": self.num_steps,
            "trainer": self.trainer.state_dict(),
            "updates": self.updates.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.num_steps = int(state["num_steps"])
        self.trainer.load_state_dict(state["trainer"])
        self.updates.load_state_dict(state["updates"])
