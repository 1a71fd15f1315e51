r"""MCMC kernels: the transitions :class:`~fabula.inference.MCMC` runs on a story's local latents.

A kernel draws from :math:`p(z \mid x, \theta)` for a batch, the story's global parameters
:math:`\theta` held fixed, by a Markov transition :math:`T(z' \mid z)` that leaves it invariant,
:math:`\int p(z \mid x)\, T(z' \mid z)\, dz = p(z' \mid x)`. The protocol follows NumPyro's
``MCMCKernel`` (``init`` a state, ``sample`` the next one) with one difference: the driver
loop belongs to the kernel, so that a kernel may run all its chains at once.

* :class:`Kernel` -- one method, :meth:`Kernel.run`: every chain, warmup included, for a batch,
  returned as :class:`Chains`. A kernel that compiles or vectorises the whole run implements
  it directly (:class:`NumPyroNUTS`: all chains and data in one JAX program).
* :class:`StepKernel` -- a kernel given by one transition at a time: :meth:`~StepKernel.init`,
  :meth:`~StepKernel.sample`, :meth:`~StepKernel.draw` and :meth:`~StepKernel.stats`; its
  :meth:`~StepKernel.run` runs the chains one after another, each with its own seed
  (:class:`PyroNUTS`).

A new sampler is one :class:`StepKernel` subclass. :class:`DiscreteGibbs` is one over finite
discrete latents: ``init`` keeps ``z``; ``sample`` sweeps the units :math:`k`, drawing each from
:math:`p(z_k \mid z_{-k}, x) \propto p(x, z^{k=v})` over its values :math:`v`, from replays of
``story.model`` on the stacked states (all data of the batch at once: the data plate keeps their
terms apart); ``draw`` returns ``{site: z}``. A Metropolis-Hastings kernel over
token sequences :math:`y`: ``init`` keeps :math:`y` and :math:`\log p(x, y)`; ``sample``
proposes :math:`y' \sim r(\cdot \mid y)` (one position resampled, say) and accepts with
probability :math:`\min\{1, p(x, y')\, r(y \mid y') / (p(x, y)\, r(y' \mid y))\}`; ``stats``
returns ``{"accept_prob": ...}``. Neither needs anything from :class:`~fabula.inference.MCMC`.

References: N. Metropolis et al. Equation of State Calculations by Fast Computing Machines.
J. Chem. Phys. 1953. W. K. Hastings. Monte Carlo Sampling Methods Using Markov Chains and
Their Applications. Biometrika 1970. M. Hoffman, A. Gelman. The No-U-Turn Sampler. JMLR 2014.
D. Phan, N. Pradhan, M. Jankowiak. Composable Effects for Flexible and Accelerated
Probabilistic Programming in NumPyro. 2019.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import init_to_value
from tqdm.auto import tqdm

from fabula.checkpoint import preserved_rng
from fabula.errors import SettingsError, UsageError
from fabula.inference.pyro_internals import RecordingNUTS
from fabula.particles import replay, unsummable, values_trace
from fabula.traces import base_distribution, is_binary, prior_latents


@dataclass
class Chains:
    """Draws ``{site: [chain, draw, B, ...]}``, per-draw statistics ``{name: [chain, draw]}``
    (``[chain, draw, B]`` when each datum has its own chains), the seconds the run took
    (``compile`` and ``sample``, warmup included), and what the kernel says of how it ran
    (``info``; :class:`NumPyroNUTS`: which twin, ``{"twin": "hand" | "generic"}``)."""

    samples: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's generators (CPU and ``device``) seeded with ``seed`` inside the block and restored
    after it, so that a seeded run leaves the caller's random stream as it was."""
    with preserved_rng(device):
        torch.manual_seed(seed)
        yield


class Kernel(ABC):
    """An MCMC kernel: :meth:`run` samples every chain for a batch."""

    name: str = "MCMC"
    """What progress bars call it."""

    @abstractmethod
    def run(
        self,
        story,
        batch,
        init: dict[str, torch.Tensor] | None,
        *,
        num_samples: int,
        warmup: int,
        num_chains: int,
        seed: int,
        progress: bool,
    ) -> Chains:
        """``num_chains`` chains of ``warmup`` adapting transitions, then ``num_samples`` kept
        draws of :math:`p(z \\mid x)` for ``batch`` under ``story`` (in evaluation mode), started
        at ``init`` (``{site: [B, ...]}``) or, when ``None``, at draws from the prior."""


class StepKernel(Kernel):
    """A kernel given by its transition; :meth:`run` drives it, one chain after another.

    Chain ``c`` runs with torch's generator seeded from ``(seed, c)`` (the caller's stream is
    left as it was) and starts at ``init``, its own prior draw (the story's trace) filling the
    sites ``init`` lacks (all of them when it is ``None``).
    """

    @abstractmethod
    def init(self, story, batch, start: dict[str, torch.Tensor], warmup: int) -> Any:
        """The state of a chain at ``start`` (``{site: [B, ...]}``); the first ``warmup``
        transitions from it may adapt the kernel."""

    @abstractmethod
    def sample(self, state: Any) -> Any:
        """The state after one transition."""

    @abstractmethod
    def draw(self, state: Any) -> dict[str, torch.Tensor]:
        """The latents of ``state``: ``{site: [B, ...]}``."""

    def stats(self, state: Any) -> dict[str, float | torch.Tensor]:
        """Statistics of the transition into ``state``: numbers, or ``[B]`` tensors for
        per-datum ones (an acceptance rate, say); none by default."""
        return {}

    def run(self, story, batch, init, *, num_samples, warmup, num_chains, seed, progress) -> Chains:
        clock = time.perf_counter()
        seeds = np.random.SeedSequence(seed).generate_state(num_chains)
        draws, stats = [], []
        for chain, chain_seed in enumerate(seeds.tolist()):
            kept, kept_stats = [], []
            with seeded(chain_seed, story.device):
                start = init or {}
                if any(s not in start for s in story.latent_sites):
                    start = prior_latents(story, batch) | start
                state = self.init(story, batch, start, warmup)
                steps = range(warmup + num_samples)
                for i in tqdm(steps, desc=f"{self.name} chain {chain}", disable=not progress, leave=False):
                    state = self.sample(state)
                    if i >= warmup:
                        kept.append(self.draw(state))
                        kept_stats.append(self.stats(state))
            draws.append(_stack(kept))
            stats.append({k: v.cpu() for k, v in _stack(kept_stats).items()})
        return Chains(_stack(draws), _stack(stats), {"compile": 0.0, "sample": time.perf_counter() - clock})


def _stack(records: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([torch.as_tensor(r[k]) for r in records]) for k in records[0]} if records else {}


@dataclass
class _GibbsState:
    story: Any
    batch: Any
    z: dict[str, torch.Tensor]  # {site: [B, ...]}, values of each site's support
    values: dict[str, torch.Tensor]  # {site: [K]}: the values of one of its units
    flips: torch.Tensor  # [B]: units that changed in the last sweep


def _refuse_without_latents(story, sampler: str) -> None:
    """A story without latent sites has no posterior for ``sampler`` to draw."""
    if not story.latent_sites:
        raise UsageError(
            f"{type(story).__name__} has no latent sites, so {sampler} has no posterior to sample; its "
            "log p(x) is exact (the exact estimator)"
        )


def _unit_values(site: dict, owner: str) -> torch.Tensor:
    """``[K]``: the values one unit of a finite discrete latent ``site`` takes (one coordinate
    of its event; the site itself when it has none; 0 and 1 for binary units drawn jointly, as
    an autoregressive prior's), refusing any other site."""
    base = base_distribution(site["fn"])
    if base.has_enumerate_support:
        return base.enumerate_support(expand=False).reshape(-1)
    if is_binary(site["fn"]):
        return site["value"].new_tensor([0.0, 1.0])
    raise UsageError(
        f"the Gibbs kernel samples finite discrete latents; site {site['name']!r} of {owner} has support "
        f"{base.support}: use nuts"
    )


class DiscreteGibbs(StepKernel):
    r"""Single-site Gibbs sampling of a story's finite discrete local latents (binary units such
    as the sigmoid belief net's ``"h"``, a mixture's categorical ``"c"``, or any site whose
    units have a finite support): a transition is one sweep over the sites and their units in
    order, each unit drawn from its exact conditional

    .. math:: p(z_k = v \mid z_{-k}, x) \propto p(x, z^{k=v}), \qquad v \in \mathcal V_k,

    the :math:`|\mathcal V_k|` log joints from one replay of ``story.model`` on the states
    stacked on the particle plate (:func:`~fabula.particles.replay`: scales and masks
    as in Pyro's traces), for every datum of the batch at once (the data plate keeps their terms
    apart). No adaptation: ``warmup`` sweeps are burn-in. A binary start that is not binary (a
    guide's posterior mean) is rounded to the nearest state. Statistic per draw and datum:
    ``flips``, the units that changed in the sweep. Written by hand: Pyro's samplers enumerate or
    marginalise discrete sites instead of sampling them.

    References: S. Geman, D. Geman. Stochastic Relaxation, Gibbs Distributions, and the Bayesian
    Restoration of Images. IEEE PAMI 1984. R. Neal. Connectionist learning of belief networks.
    Artificial Intelligence 1992.
    """

    name = "Gibbs"

    def init(self, story, batch, start, warmup) -> _GibbsState:
        _refuse_without_latents(story, "the Gibbs kernel")
        trace = poutine.trace(poutine.condition(story.model, data=start)).get_trace(batch)
        owner = type(story).__name__
        unit_values = {s: _unit_values(trace.nodes[s], owner) for s in story.latent_sites}
        z = {}
        for s, values in unit_values.items():
            value = start[s].detach()
            if values.dtype.is_floating_point and set(values.tolist()) == {0.0, 1.0}:
                value = value.round().clamp(0, 1)
            z[s] = value.to(values.dtype)
        return _GibbsState(story, batch, z, unit_values, torch.zeros(batch.size))

    def sample(self, state: _GibbsState) -> _GibbsState:
        story, batch = state.story, state.batch
        z = {s: v.clone() for s, v in state.z.items()}
        before = torch.cat([v.reshape(batch.size, -1).double() for v in z.values()], -1)
        for site, values in state.values.items():
            units = z[site].reshape(batch.size, -1)  # a view: writes reach z[site]
            for k in range(units.shape[-1]):
                states = {s: v.expand(len(values), *v.shape).clone() for s, v in z.items()}
                states[site].reshape(len(values), batch.size, -1)[:, :, k] = values[:, None]
                logits = replay(story, batch, values_trace(states), len(values)).joint  # [V, B]
                if logits.shape != (len(values), batch.size):
                    raise UsageError(
                        f"the Gibbs kernel needs every site of {type(story).__name__} in the data plate "
                        f"(the log joint came out {tuple(logits.shape)}, not ({len(values)}, {batch.size}))"
                    )
                units[:, k] = values[torch.distributions.Categorical(logits=logits.T).sample()]
        after = torch.cat([v.reshape(batch.size, -1).double() for v in z.values()], -1)
        flips = (after != before).sum(-1).to(torch.get_default_dtype())
        return _GibbsState(story, batch, z, state.values, flips)

    def draw(self, state: _GibbsState) -> dict[str, torch.Tensor]:
        return state.z

    def stats(self, state: _GibbsState) -> dict[str, torch.Tensor]:
        return {"flips": state.flips}


@dataclass
class _NutsState:
    nuts: RecordingNUTS
    params: dict[str, torch.Tensor]
    diverging: bool = False


class PyroNUTS(StepKernel):
    """Pyro's No-U-Turn sampler on the story itself: one joint chain over all the batch's
    continuous latents (Pyro sums discrete sites out), with Pyro's step-size and diagonal
    mass-matrix adaptation in warmup. Statistics per draw (``[chain, draw]``): ``energy``,
    ``diverging``, ``step_size``, ``n_steps`` (leapfrog steps) and ``tree_depth``."""

    name = "NUTS (pyro)"

    def __init__(self, target_accept: float = 0.8, max_tree_depth: int = 10):
        self.target_accept, self.max_tree_depth = target_accept, max_tree_depth

    def init(self, story, batch, start, warmup) -> _NutsState:
        _refuse_without_latents(story, "NUTS")
        trace = poutine.trace(poutine.condition(story.model, data=start)).get_trace(batch)
        continuous = {s: start[s] for s in story.latent_sites if not trace.nodes[s]["fn"].support.is_discrete}
        if not continuous:
            exact = (
                "; or sum them out: the exact estimator and fabula.particles.enumerated_posterior"
                if unsummable(story, batch) is None
                else ""
            )
            raise UsageError(
                f"the latents of {type(story).__name__} ({', '.join(story.latent_sites)}) are all discrete: NUTS "
                f"moves continuous ones; sample them with gibbs{exact}"
            )
        nuts = RecordingNUTS(
            story.model,
            target_accept_prob=self.target_accept,
            max_tree_depth=self.max_tree_depth,
            init_strategy=init_to_value(values=continuous),
        )
        with torch.enable_grad():  # the potential is differentiated even when the caller's grad is off
            nuts.setup(warmup, batch)
        return _NutsState(nuts, nuts.initial_params)

    def sample(self, state: _NutsState) -> _NutsState:
        before = state.nuts.divergences
        with torch.enable_grad():
            params = state.nuts.sample(state.params)
        return _NutsState(state.nuts, params, state.nuts.divergences > before)

    def draw(self, state: _NutsState) -> dict[str, torch.Tensor]:
        # the kernel moves in unconstrained space: map each site back to its support
        transforms = state.nuts.transforms
        return {s: (transforms[s].inv(v) if s in transforms else v).detach() for s, v in state.params.items()}

    def stats(self, state: _NutsState) -> dict[str, float]:
        nuts = state.nuts
        return {
            "energy": nuts.last_energy,
            "diverging": state.diverging,
            "step_size": float(nuts.step_size),
            "n_steps": nuts.leapfrogs,
            # a tree of depth d takes 2^(d-1) to 2^d - 1 leapfrog steps
            "tree_depth": max(nuts.leapfrogs, 1).bit_length(),
        }


class NumPyroNUTS(Kernel):
    """NumPyro's No-U-Turn sampler on a JAX form of the story's log joint
    (:mod:`fabula.backends.numpyro`): every datum gets its own chains and adaptation, all chains
    and data one compiled program. ``twin`` picks the form: ``"hand"`` the hand-written twin
    registered for the story's class (discrete sites summed out in it), ``"generic"`` the
    story's own torch log joint called from JAX (:mod:`fabula.backends.callback`; continuous
    latents only), ``"auto"`` (the default) the hand twin when one is registered, else the
    generic one; the run's :attr:`Chains.info` says which ran. All chains start at ``init``,
    or at one prior draw. Statistics per draw and datum (``[chain, draw, B]``): ``energy``,
    ``diverging``, ``step_size``, ``n_steps``, ``accept_prob``, ``tree_depth``."""

    name = "NUTS (numpyro)"
    TWINS = ("auto", "hand", "generic")

    def __init__(self, target_accept: float = 0.8, max_tree_depth: int = 10, twin: str = "auto"):
        if twin not in self.TWINS:
            raise SettingsError(f"unknown twin {twin!r}; choose from {self.TWINS}")
        self.target_accept, self.max_tree_depth, self.twin = target_accept, max_tree_depth, twin

    def twin_for(self, story, batch):
        """The JAX twin this kernel samples ``batch`` with, and which it is: ``(twin, "hand" |
        "generic")``."""
        # JAX is imported only when used
        from fabula.backends.callback import generic_twin
        from fabula.backends.numpyro import has_twin, twin

        kind = self.twin if self.twin != "auto" else "hand" if has_twin(story) else "generic"
        return (twin(story) if kind == "hand" else generic_twin(story, batch)), kind

    def run(self, story, batch, init, *, num_samples, warmup, num_chains, seed, progress) -> Chains:
        from fabula.backends.numpyro import nuts

        jax_twin, kind = self.twin_for(story, batch)
        if init is None:
            with seeded(seed, story.device):
                init = prior_latents(story, batch)
        result = nuts(
            jax_twin,
            batch,
            {s: init[s].detach().cpu().numpy() for s in jax_twin.sites},
            num_samples=num_samples,
            warmup=warmup,
            num_chains=num_chains,
            target_accept=self.target_accept,
            max_tree_depth=self.max_tree_depth,
            seed=seed,
            progress=progress,
        )
        return Chains(
            {s: torch.as_tensor(v, device=story.device) for s, v in result.samples.items()},
            {k: torch.as_tensor(v) for k, v in result.stats.items()},
            {"compile": result.compile_seconds, "sample": result.sample_seconds},
            {"twin": kind},
        )


NUTS_KERNELS = {"pyro": PyroNUTS, "numpyro": NumPyroNUTS}
"""The NUTS kernel of each backend, for ``MCMC(..., backend=...)``."""
