r"""Gradient ascent on per-datum variational parameters: the inner loop of per-instance SVI
and of semi-amortized VI.

.. math::
    v_{k+1} = \mu\, v_k + \nabla_\lambda \mathrm{ELBO}(\lambda_k), \qquad
    \lambda_{k+1} = \lambda_k + \alpha\, \mathrm{clip}(v_{k+1})

(SGD with momentum :math:`\mu` and step size :math:`\alpha`, gradients clipped per datum to
norm ``clip_norm``). The ELBO is the inference setup's bound (a Pyro ``ELBO``; by default
:class:`~fabula.inference.mean_field.MeanFieldELBO`, and ``TraceEnum_ELBO`` for stories whose discrete sites are summed
out) of the story and the guide run at :math:`\lambda_k`; because the data are independent, the gradient of the batch's ELBO
with respect to datum ``b``'s :math:`\lambda_b` is that datum's own gradient. With
``differentiable=True`` every step stays in the autograd graph (``create_graph``), so the
result can be differentiated with respect to :math:`\lambda_0` and the story's parameters
through all K steps: with exact Hessian-vector products (``hvp="exact"``, autograd with
``create_graph``) or, as in Kim et al.'s Algorithm 2, with finite differences
(``hvp="finite-difference"``): the K steps run without a graph, and the backward pass walks
them in reverse, each Hessian-vector product taken as
:math:`H u \approx (\nabla f(\lambda + r u) - \nabla f(\lambda - r u)) / 2r`,
:math:`r = \epsilon / \|u\|`, with the step's own random draws replayed; memory is that of
one step. Per-datum clipping factors are treated as constants there. Pyro has no such unrolled
optimiser; it is written here.

References:
  M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
  Y. Kim, S. Wiseman, A. Miller, D. Sontag, A. Rush. Semi-Amortized Variational Autoencoders. ICML 2018.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.infer import ELBO, TraceEnum_ELBO

from fabula.checkpoint import preserved_rng
from fabula.devices import lower_precision
from fabula.errors import DivergenceError, SettingsError, UsageError
from fabula.inference.objectives import bound_of
from fabula.traces import sample_sites


def negative_elbo(story, guide, batch, params: dict[str, torch.Tensor], objective: ELBO | None = None):
    """The batch's summed negative bound of ``objective`` (:func:`~fabula.inference.objectives.bound_of`)
    with the guide at ``params``."""
    return bound_of(objective).differentiable_loss(story.model, lambda b: guide(b, params), batch)


def check_refinable(guide, batch, params: dict[str, torch.Tensor], objective: ELBO | None) -> None:
    """Refuse to refine λ by gradients when a guide site is neither reparameterised nor summed
    out by ``objective`` (a ``TraceEnum_ELBO`` over a site marked for enumeration)."""
    if not params:  # a guide without λ has no sites to refine
        return
    device = next(iter(params.values())).device
    # the check draws from q; the random stream is restored so that it changes no result
    with preserved_rng(device), torch.no_grad(), poutine.block():
        trace = poutine.trace(guide).get_trace(batch, params)
    for site in sample_sites(trace):
        if site["fn"].has_rsample:
            continue
        if isinstance(objective, TraceEnum_ELBO) and site["infer"].get("enumerate") == "parallel":
            continue
        raise UsageError(
            f"refinement follows gradients of a reparameterised ELBO, but guide site {site['name']!r} "
            "is discrete; refine with an objective that sums it out (TraceEnum_ELBO, the mixture "
            "story's bound)"
        )


class RefinementWarning(UserWarning):
    """Refinement raised the negative ELBO it is meant to lower: its step size ``lr`` is too large.
    ``before`` and ``after`` are the batch's mean negative ELBO at λ_0 and λ_K, so that a caller
    can restate the remedy in its own terms (the ``fabula`` command names its flag)."""

    def __init__(
        self, message: str, lr: float | None = None, before: float | None = None, after: float | None = None
    ):
        super().__init__(message)
        self.lr, self.before, self.after = lr, before, after


@dataclass(frozen=True)
class Refinement:
    """Settings of the inner loop: ``steps`` (K), ``lr`` (α), ``momentum`` (μ), ``clip_norm``.

    The defaults (α = 1, per-datum clip 5) are Kim et al.'s for LSTM sentence VAEs. The scale of
    a good α is that of the gradient of a datum's ELBO with respect to its λ, which grows with
    the datum's size: a bag of words of hundreds of tokens needs α of about 0.01-0.1. Choose the
    largest α for which the refined ELBO is lower than the start's; refinement outside training
    (evaluation, test-time refinement) checks that on each batch, with the same random numbers
    at both ends, and warns (:class:`RefinementWarning`) when it is not.

    Refining an untrained encoder's λ for 8 data of a linear-Gaussian story brings the means of q
    close to those of the exact posterior:

    >>> import torch
    >>> from fabula.data import Vectors
    >>> from fabula.guides import NormalGuide
    >>> from fabula.inference import Refinement
    >>> from fabula.models import LinearGaussian
    >>> _ = torch.manual_seed(0)
    >>> story, guide = LinearGaussian(data_dim=6, latent_dim=2, noise_scale=0.5), NormalGuide(6, 2, hidden=[])
    >>> batch = Vectors(story.generate(8)).batch(torch.arange(8))
    >>> start = guide.local_params(batch)
    >>> refined = Refinement(steps=50, lr=0.01).run(story, guide, batch, start)
    >>> {name: tuple(value.shape) for name, value in refined.items()}
    {'loc': (8, 2), 'log_scale': (8, 2)}
    >>> exact = story.posterior(batch.x).mean
    >>> def error(params):  # distance of q's means from the exact posterior means
    ...     return (params["loc"] - exact).norm().item()
    >>> error(refined) < error(start) / 4
    True
    """

    steps: int = 20
    lr: float = 1.0
    momentum: float = 0.5
    clip_norm: float | None = 5.0
    hvp: str = "exact"
    epsilon: float = 1e-5

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or not 0 <= self.momentum < 1 or self.epsilon <= 0:
            raise SettingsError(f"bad refinement settings {self}")
        if self.hvp not in ("exact", "finite-difference"):
            raise SettingsError(f"hvp must be 'exact' or 'finite-difference', got {self.hvp!r}")

    def _loss(self, story, guide, batch, lam, step: int, objective) -> torch.Tensor:
        """The negative ELBO at step ``step``, with divergence reported as such."""
        try:
            loss = negative_elbo(story, guide, batch, lam, objective)
        except ValueError as e:  # a variational parameter left its support (a scale of 0, say)
            raise DivergenceError(
                f"refinement diverged at step {step + 1} (lr={self.lr}): {str(e)[:120]}"
            ) from None
        if not torch.isfinite(loss):
            raise DivergenceError(f"refinement diverged at step {step + 1} (lr={self.lr}): non-finite ELBO")
        return loss

    def run(
        self,
        story,
        guide,
        batch,
        params: dict[str, torch.Tensor],
        differentiable: bool = False,
        objective: ELBO | None = None,
    ):
        """λ_K from λ_0 = ``params`` on the bound of ``objective`` (default
        :class:`~fabula.inference.mean_field.MeanFieldELBO`). Without ``differentiable`` the result is detached. Runs with
        gradients enabled even inside ``torch.no_grad`` (evaluation)."""
        objective = bound_of(objective)
        checked = not torch.is_grad_enabled()  # outside training: nothing to slow down
        with torch.enable_grad():
            refined = self._run(story, guide, batch, params, differentiable, objective)
        if checked and params and self.steps:
            self._check_descent(story, guide, batch, params, refined, objective)
        return refined

    def _check_descent(self, story, guide, batch, start, end, objective) -> None:
        """Warn when the negative ELBO at λ_K exceeds the one at λ_0 (common random numbers)."""
        device = next(iter(start.values())).device
        losses = []
        for lam in (start, end):  # with gradients on: TraceEnum_ELBO refuses a loss without them
            with preserved_rng(device), torch.enable_grad():
                lam = {k: v.detach().requires_grad_() for k, v in lam.items()}
                losses.append(negative_elbo(story, guide, batch, lam, objective).item() / batch.size)
        if losses[1] > losses[0]:
            message = (
                f"refinement raised the mean negative ELBO of a batch from {losses[0]:.2f} to "
                f"{losses[1]:.2f} nats ({self.steps} steps, lr={self.lr}): lower Refinement(lr=...) "
                "(see its docstring for the scale)"
            )
            warnings.warn(RefinementWarning(message, self.lr, *losses), stacklevel=3)

    def _run(self, story, guide, batch, params, differentiable, objective):
        if not params:  # a story without latents has nothing to refine
            return params
        if differentiable and self.hvp == "finite-difference":
            keys = list(params)
            theta = [p for p in story.parameters() if p.requires_grad]
            out = _FiniteDifferenceUnroll.apply(
                self, story, guide, batch, objective, keys, *params.values(), *theta
            )
            return dict(zip(keys, out, strict=True))
        lam = {k: v if differentiable else v.detach().requires_grad_() for k, v in params.items()}
        velocity = {k: torch.zeros_like(v) for k, v in lam.items()}
        for step in range(self.steps):
            loss = self._loss(story, guide, batch, lam, step, objective)
            grads = torch.autograd.grad(loss, list(lam.values()), create_graph=differentiable)
            grads = dict(zip(lam, grads, strict=True))
            factor = _clip_factors(grads, self.clip_norm)
            grads = {k: _scale(g, factor) for k, g in grads.items()}
            velocity = {k: self.momentum * velocity[k] - grads[k] for k in lam}
            lam = {k: lam[k] + self.lr * velocity[k] for k in lam}
            if not differentiable:
                lam = {k: v.detach().requires_grad_() for k, v in lam.items()}
        return lam if differentiable else {k: v.detach() for k, v in lam.items()}


def _clip_factors(grads: dict[str, torch.Tensor], clip_norm: float | None) -> torch.Tensor | float:
    """Per-datum factors that bring the gradient's norm down to ``clip_norm`` (1 below it)."""
    if clip_norm is None:
        return 1.0
    norm = torch.sqrt(sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads.values()))
    return (clip_norm / (norm + 1e-12)).clamp(max=1.0)


def _scale(g: torch.Tensor, factor) -> torch.Tensor:
    return g * (factor.view(-1, *[1] * (g.dim() - 1)) if torch.is_tensor(factor) else factor)


def _get_rng(device: torch.device):
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng(device: torch.device, state) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class _FiniteDifferenceUnroll(torch.autograd.Function):
    """λ_K as a function of (λ_0, θ), differentiated by Kim et al.'s finite-difference backward."""

    @staticmethod
    def forward(ctx, refinement, story, guide, batch, objective, keys, *tensors):
        n = len(keys)
        theta = tensors[n:]
        device = tensors[0].device
        lam = {k: t.detach() for k, t in zip(keys, tensors[:n], strict=True)}
        velocity = {k: torch.zeros_like(v) for k, v in lam.items()}
        record = []  # (λ_k, rng state, clip factors) per step
        with torch.enable_grad():
            for step in range(refinement.steps):
                state = _get_rng(device)
                leaves = {k: v.detach().requires_grad_() for k, v in lam.items()}
                grads = torch.autograd.grad(
                    refinement._loss(story, guide, batch, leaves, step, objective), list(leaves.values())
                )
                grads = dict(zip(keys, grads, strict=True))
                factor = _clip_factors(grads, refinement.clip_norm)
                record.append((lam, state, factor))
                velocity = {k: refinement.momentum * velocity[k] - _scale(grads[k], factor) for k in keys}
                lam = {k: lam[k] + refinement.lr * velocity[k] for k in keys}
        ctx.refinement, ctx.story, ctx.guide, ctx.batch, ctx.keys = refinement, story, guide, batch, keys
        ctx.objective = objective
        ctx.record, ctx.theta, ctx.device = record, theta, device
        # the backward pass recomputes the steps' gradients as the forward pass computed them
        ctx.autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        return tuple(lam[k] for k in keys)

    @staticmethod
    def backward(ctx, *lam_grads):
        r, keys, theta, device = ctx.refinement, ctx.keys, ctx.theta, ctx.device
        resume = _get_rng(device)
        lam_bar = dict(zip(keys, lam_grads, strict=True))
        v_bar = {k: torch.zeros_like(g) for k, g in lam_bar.items()}
        theta_bar = [torch.zeros_like(p) for p in theta]

        def gradient(lam, state):
            _set_rng(device, state)
            enabled, dtype = ctx.autocast
            with torch.enable_grad(), lower_precision(device, dtype, enabled):
                leaves = {k: v.detach().requires_grad_() for k, v in lam.items()}
                loss = negative_elbo(ctx.story, ctx.guide, ctx.batch, leaves, ctx.objective)
                grads = torch.autograd.grad(loss, [*leaves.values(), *theta], allow_unused=True)
            return [
                torch.zeros_like(x) if g is None else g
                for g, x in zip(grads, [*leaves.values(), *theta], strict=True)
            ]

        for lam, state, factor in reversed(ctx.record):
            v_bar = {k: v_bar[k] + r.lr * lam_bar[k] for k in keys}  # from λ_{k+1} = λ_k + α v_{k+1}
            u = {k: -_scale(v_bar[k], factor) for k in keys}  # adjoint of the raw gradient g_k
            v_bar = {k: r.momentum * v_bar[k] for k in keys}  # from v_{k+1} = μ v_k - c_k g_k
            norm = torch.sqrt(sum(x.pow(2).sum() for x in u.values()))
            if norm == 0:
                continue
            step = r.epsilon / norm
            plus = gradient({k: lam[k] + step * u[k] for k in keys}, state)
            minus = gradient({k: lam[k] - step * u[k] for k in keys}, state)
            hvp = [(a - b) / (2 * step) for a, b in zip(plus, minus, strict=True)]
            lam_bar = {k: lam_bar[k] + h for k, h in zip(keys, hvp[: len(keys)], strict=True)}
            theta_bar = [t + h for t, h in zip(theta_bar, hvp[len(keys) :], strict=True)]
        _set_rng(device, resume)
        return (None, None, None, None, None, None, *(lam_bar[k] for k in keys), *theta_bar)
