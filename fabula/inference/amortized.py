"""Amortized variational inference: the guide's encoder gives λ = enc(x) for every datum."""

from __future__ import annotations

import math

import pyro.optim
import torch
from pyro.infer import ELBO, TraceMeanField_ELBO

from fabula.inference.annealing import Constant, annealed
from fabula.inference.base import Inference
from fabula.inference.free_bits import FreeBitsELBO
from fabula.inference.word_dropout import word_dropout


def make_optimizer(optimizer, params, optim_args: dict) -> torch.optim.Optimizer:
    """A torch optimizer over ``params`` from a ``torch.optim.Optimizer`` class or a Pyro optimizer.

    Pyro optimizers (``pyro.optim.Adam({"lr": ...})``, ``ClippedAdam``, ...) wrap a torch
    optimizer class and its arguments; fabula uses that class over all parameters at once so
    that gradient clipping is by global norm and the state is one ``state_dict``.
    """
    if isinstance(optimizer, pyro.optim.PyroOptim):
        if callable(optimizer.pt_optim_args):
            raise ValueError("per-parameter optimizer arguments (a callable) are not supported")
        optimizer, optim_args = (
            optimizer.pt_optim_constructor,
            {**optimizer.pt_optim_args, **optim_args},
        )
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer class or a Pyro optimizer, got {optimizer!r}"
        )
    return optimizer(params, **optim_args)


class Amortized(Inference):
    r"""Stochastic gradient ascent on the ELBO of story and guide jointly.

    .. math:: \mathcal L(\theta, \phi) = \sum_b E_{q_\phi(z\mid x_b)}[\log p_\theta(x_b\mid z)]
              - \beta_t\, KL\big(q_\phi(z\mid x_b) \,\|\, p(z)\big)

    The loss is any Pyro ``ELBO``: ``TraceMeanField_ELBO`` (analytic KL, the default),
    ``Trace_ELBO`` (Monte Carlo KL), ``TraceEnum_ELBO`` for enumerated discrete sites, or the
    :class:`~fabula.inference.free_bits.FreeBitsELBO` when ``free_bits`` is given. The weight
    :math:`\beta_t` comes from ``annealing`` (a schedule of the step count) through
    :class:`~fabula.inference.annealing.ScaleLatents`. Gradients are clipped by global norm.
    ``word_dropout`` replaces decoder input words by ``<unk>`` in training steps
    (:func:`~fabula.inference.word_dropout.word_dropout`).

    The loss reported by :meth:`step` is per datum (the annealed negative ELBO over the batch size).

    References: D. Kingma, M. Welling. Auto-Encoding Variational Bayes. ICLR 2014.
    """

    def __init__(
        self,
        story,
        guide,
        *,
        elbo: ELBO | None = None,
        optimizer=torch.optim.Adam,
        optim_args: dict | None = None,
        clip_norm: float | None = None,
        annealing=None,
        free_bits: float | None = None,
        word_dropout: float = 0.0,
        learn_story: bool = True,
    ):
        super().__init__(story, guide)
        if free_bits is not None and elbo is not None:
            raise ValueError("give either an elbo or free_bits, not both")
        self.elbo = FreeBitsELBO(free_bits) if free_bits is not None else elbo or TraceMeanField_ELBO()
        self.annealing = annealing or Constant()
        self.clip_norm = clip_norm
        self.word_dropout = word_dropout
        self.learn_story = learn_story
        self.params = [p for p in self.trainable_parameters() if p.requires_grad]
        # nothing to train (a fixed story and no guide weights, as for per-instance SVI of a
        # given model): the object still refines and evaluates, but refuses to step
        self.optimizer = (
            make_optimizer(optimizer, self.params, optim_args or {"lr": 1e-3}) if self.params else None
        )

    def trainable_parameters(self):
        if self.learn_story:
            yield from self.story.parameters()
        yield from self.guide.parameters()

    def split_optimizers(self) -> None:
        """Give story and guide separate optimizers of the joint one's kind and settings
        (``story_params``/``story_optimizer``, ``guide_params``/``guide_optimizer``), for
        inference objects that update them on different losses."""
        if not self.learn_story:
            raise ValueError(f"{type(self).__name__} trains the story; learn_story=False is not supported")
        kind, settings = type(self.optimizer), dict(self.optimizer.defaults)
        self.story_params = [p for p in self.story.parameters() if p.requires_grad]
        self.guide_params = [p for p in self.guide.parameters() if p.requires_grad]
        self.story_optimizer = kind(self.story_params, **settings)
        self.guide_optimizer = kind(self.guide_params, **settings)

    def loss(self, batch) -> torch.Tensor:
        """The annealed negative ELBO per datum of a training step (word dropout applied).

        λ is computed before the guide is traced, so that inference objects whose
        :meth:`local_params` run Pyro themselves (refinement) stay out of the trace."""
        beta = self.annealing(self.num_steps)
        params = self.local_params(batch)
        if self.word_dropout:
            batch = word_dropout(batch, self.word_dropout)

        def guide(b):
            return self.guide(b, params)

        loss = self.elbo.differentiable_loss(annealed(self.story.model, beta), annealed(guide, beta), batch)
        return loss / batch.size + self.regularizer(batch, params)

    def regularizer(self, batch, params: dict[str, torch.Tensor]) -> torch.Tensor | float:
        """A term added to the per-datum loss by the inference setup (default: none)."""
        return 0.0

    def descend(self, loss: torch.Tensor, params, *optimizers: torch.optim.Optimizer) -> float:
        """One gradient step of each of ``optimizers`` on ``loss``; the gradients of ``params``
        (all the optimizers' parameters) are clipped together."""
        value = loss.detach().item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"non-finite loss {value} at step {self.num_steps + 1}; "
                "lower the learning rate or set clip_norm (the last checkpoint is intact)"
            )
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        for optimizer in optimizers:
            optimizer.step()
        return value

    def step(self, batch) -> dict[str, float]:
        if self.optimizer is None:
            raise ValueError(
                "this inference object has no parameters to train (a fixed story and no guide weights)"
            )
        beta = self.annealing(self.num_steps)
        value = self.descend(self.loss(batch), self.params, self.optimizer)
        self.num_steps += 1
        return {"loss": value, "beta": beta}

    def set_lr(self, lr: float) -> None:
        """Set the step size of every optimizer this object steps (learning-rate schedules)."""
        for optimizer in vars(self).values():
            if isinstance(optimizer, torch.optim.Optimizer):
                for group in optimizer.param_groups:
                    group["lr"] = lr

    def state_dict(self) -> dict:
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {**super().state_dict(), "optimizer": optimizer}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
