r"""Wake-sleep and reweighted wake-sleep: the story learns from importance-weighted draws of q;
the guide from the story's weights (wake-φ) or from the story's dreams (sleep-φ).

With :math:`K` draws :math:`h_k \sim q_\phi(h \mid x)` per datum,
:math:`\log w_k = \log p_\theta(x, h_k) - \log q_\phi(h_k \mid x)` and weights normalised per
datum, :math:`\tilde w_k = w_k / \sum_j w_j`:

* wake-θ: :math:`\nabla_\theta \log \frac1K \sum_k w_k = \sum_k \tilde w_k \nabla_\theta \log
  p_\theta(x, h_k)`, the gradient of the importance-weighted bound;
* wake-φ: :math:`\sum_k \tilde w_k \nabla_\phi \log q_\phi(h_k \mid x)`, a self-normalised
  estimate of :math:`-\nabla_\phi KL(p_\theta(h \mid x) \,\|\, q_\phi(h \mid x))`;
* sleep-φ: :math:`\nabla_\phi \log q_\phi(\tilde h \mid \tilde x)` for :math:`(\tilde h, \tilde x)
  \sim p_\theta` dreamt by the story (:class:`~fabula.models.capabilities.Dreams`), one
  dream per datum, as long as the datum.

The guide ascends ``insomnia`` · wake-φ + (1 − ``insomnia``) · sleep-φ (Pyro's naming). One
draw with sleep-φ alone is the wake-sleep algorithm of Hinton et al. (1995).

Pyro's ``ReweightedWakeSleep`` normalises one weight per particle over the whole minibatch (and
does not support minibatches); here the weights are per datum, so a batch of N data gives the
sum of their N losses, the same expected gradient as N batches of one. That, and sleep-φ on a
batch the story dreams, is why the loss is written here, over fabula's traces.

Both phases' gradients are taken at the same parameters and applied in one step (as Pyro's
``ReweightedWakeSleep`` does); Hinton et al. alternate the phases, which differs at second
order in the step size.

References:
  G. Hinton, P. Dayan, B. Frey, R. Neal. The "wake-sleep" algorithm for unsupervised neural
  networks. Science 1995.
  J. Bornschein, Y. Bengio. Reweighted Wake-Sleep. ICLR 2015.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from fabula.errors import SettingsError, UsageError
from fabula.inference.sources import Encoded
from fabula.inference.variational import VariationalInference
from fabula.models.capabilities import Dreams
from fabula.models.story import Story
from fabula.particles import replay
from fabula.traces import PARTICLE_DIM, log_density


def log_joint_and_proposal(model, guide, batch, num_particles: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""``(log p(x, h_k), log q(h_k | x))``, each ``[K, B]``, for ``K = num_particles`` draws of
    the guide per datum, the draws detached: :math:`\log p` carries the story's gradient only,
    :math:`\log q` the guide's (through its parameters, not its draws). ``model`` is a story's
    own ``model`` (these losses take no annealing), replayed as every estimator replays it
    (:func:`~fabula.particles.replay`: draw by draw where the story does not broadcast)."""
    story = getattr(model, "__self__", None)
    if not isinstance(story, Story):
        raise UsageError(f"the particle losses replay a story's model on K draws; got {model!r}")
    with pyro.plate("particles", num_particles, dim=PARTICLE_DIM):
        guide_trace = poutine.trace(guide).get_trace(batch)
    guide_trace.detach_()
    shape = (num_particles, batch.size)
    log_p = replay(story, batch, guide_trace, num_particles).joint
    return log_p, log_density(guide_trace) + torch.zeros(shape, device=log_p.device)


def refuse_annealing(name: str, settings: dict) -> None:
    """KL annealing scales the ELBO's KL; the losses of ``name`` have none to scale."""
    if settings.get("annealing") is not None:
        raise SettingsError(
            f"{name} trains without KL annealing (its loss has no KL term to scale); give no --anneal"
        )


class ReweightedWakeSleepLoss:
    r"""The reweighted wake-sleep loss of a batch (module docstring), as one surrogate: its
    value is minus the importance-weighted bound with ``K`` draws summed over the batch; its
    gradient is wake-θ for the story and the ``insomnia`` mixture of wake-φ and sleep-φ for the
    guide. ``story`` and ``guide`` are the modules that sleep-φ dreams with and encodes the
    dreams with (its λ is the guide's encoder's); ``bound`` is the ELBO (refinement's).
    """

    def __init__(self, story, guide, num_particles: int, insomnia: float = 1.0):
        if not 0.0 <= insomnia <= 1.0:
            raise SettingsError(f"insomnia must lie in [0, 1], got {insomnia}")
        if insomnia > 0 and num_particles < 2:
            raise SettingsError(
                "wake-φ needs K >= 2 draws: with one, its self-normalised weight is 1 and its gradient is "
                "zero in expectation (wake-sleep is the one-draw form, with sleep-φ)"
            )
        if insomnia < 1 and not isinstance(story, Dreams):
            raise SettingsError(
                f"sleep-φ dreams data from the story, and {type(story).__name__} does not dream"
            )
        self.story, self.guide = story, guide
        self.num_particles, self.insomnia = num_particles, insomnia
        self.bound = Trace_ELBO()

    def sleep_loss(self, batch) -> torch.Tensor:
        r""":math:`-\sum_b \log q_\phi(\tilde h_b \mid \tilde x_b)` over one dream per datum."""
        latents, dreamt = self.story.dream(batch)
        trace = poutine.trace(poutine.condition(self.guide, data=latents)).get_trace(dreamt)
        return -log_density(trace).sum()

    def differentiable_loss(self, model, guide, batch) -> torch.Tensor:
        log_p, log_q = log_joint_and_proposal(model, guide, batch, self.num_particles)
        log_w = log_p - log_q.detach()
        loss = -(torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()
        phi = 0.0
        if self.insomnia > 0:
            weights = torch.softmax(log_w.detach(), 0)
            phi = phi - self.insomnia * (weights * log_q).sum()
        if self.insomnia < 1:
            phi = phi + (1 - self.insomnia) * self.sleep_loss(batch)
        return loss + (phi - phi.detach())


class ReweightedWakeSleep(VariationalInference):
    r"""Reweighted wake-sleep (Bornschein & Bengio 2015) with ``K = num_particles`` draws of the
    encoder's q per datum: the story on the importance-weighted bound, the encoder on wake-φ
    (``insomnia=1``), sleep-φ (``0``) or their mixture. :meth:`step` reports minus the bound with
    K draws per datum. Other settings are those of
    :class:`~fabula.inference.VariationalInference` (no KL annealing)."""

    def __init__(self, story, guide, num_particles: int = 5, insomnia: float = 1.0, **settings):
        refuse_annealing(type(self).__name__, settings)
        objective = ReweightedWakeSleepLoss(story, guide, num_particles, insomnia)
        super().__init__(story, Encoded(guide), objective=objective, **settings)


class WakeSleep(ReweightedWakeSleep):
    r"""The wake-sleep algorithm (Hinton et al. 1995): the story ascends
    :math:`\log p_\theta(x, h)` at one draw :math:`h \sim q_\phi(h \mid x)` (wake), the encoder
    :math:`\log q_\phi(\tilde h \mid \tilde x)` on a dream :math:`(\tilde h, \tilde x) \sim
    p_\theta` per datum (sleep). :meth:`step` reports the one-draw negative ELBO."""

    def __init__(self, story, guide, **settings):
        super().__init__(story, guide, num_particles=1, insomnia=0.0, **settings)
