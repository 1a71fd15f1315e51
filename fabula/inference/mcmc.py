"""MCMC over a story's local latents, given its trained global parameters (Pyro's NUTS)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import MCMC as PyroMCMC
from pyro.infer import NUTS
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value

from fabula.inference.base import Inference
from fabula.nn.mode import evaluation_mode


class _RecordingNUTS(NUTS):
    """NUTS that also records, per draw, the Hamiltonian at the start of the trajectory
    (potential plus kinetic energy after the momentum is drawn: equal to Stan's ``energy__`` up
    to the integrator's error, and what ArviZ's energy plot and BFMI read) and the number of
    leapfrog steps. Pyro's kernel keeps neither."""

    def _sample_r(self, name):
        r, r_unscaled = super()._sample_r(name)
        self.last_energy = float(self._kinetic_energy(r_unscaled) + self._potential_energy_last)
        self.leapfrogs = 0
        return r, r_unscaled

    def _build_basetree(self, *args, **kwargs):
        self.leapfrogs += 1
        return super()._build_basetree(*args, **kwargs)


@dataclass
class Chains:
    """Draws ``{site: [chain, draw, B, ...]}`` and per-draw statistics ``{name: [chain, draw]}``."""

    samples: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]


class MCMC(Inference):
    r"""No-U-Turn sampling of :math:`p(z \mid x)` for a plated batch of independent posteriors
    (one joint chain over all the batch's latents), the story's global parameters held fixed.

    Chains start from the guide's posterior mean when a guide is given (else from a prior
    draw). :meth:`posterior` returns the draws pooled over chains; :attr:`chains` keeps them per
    chain with the sampler's statistics (energy, divergences, step size, leapfrog steps, tree
    depth) for :func:`fabula.diagnostics.to_arviz`.

    Backends: ``"pyro"`` runs Pyro's NUTS on the story itself, chains one after another, one
    joint chain over the whole batch (statistics ``[chain, draw]``). ``"numpyro"`` runs NumPyro's
    NUTS on the story's JAX twin (:mod:`fabula.backends.numpyro`): every datum gets its own
    chains and adaptation, all chains and data vectorized in one compiled program (statistics
    ``[chain, draw, B]``; discrete sites summed out, so only continuous sites are drawn).

    References: M. Hoffman, A. Gelman. The No-U-Turn Sampler. JMLR 2014.
    """

    BACKENDS = ("pyro", "numpyro")

    def __init__(
        self,
        story,
        guide=None,
        num_samples: int = 500,
        warmup: int = 500,
        num_chains: int = 1,
        target_accept: float = 0.8,
        max_tree_depth: int = 10,
        progress: bool = True,
        backend: str = "pyro",
        seed: int = 0,
    ):
        if backend not in self.BACKENDS:
            raise ValueError(f"unknown MCMC backend {backend!r}; choose from {self.BACKENDS}")
        super().__init__(story, guide)
        self.backend, self.seed = backend, seed
        self.seconds: dict[str, float] = {}
        self.num_samples, self.warmup, self.num_chains = num_samples, warmup, num_chains
        self.target_accept, self.max_tree_depth, self.progress = target_accept, max_tree_depth, progress
        self.chains: Chains | None = None

    def step(self, batch):
        raise NotImplementedError("MCMC samples posteriors of a trained story; it does not train")

    def _guide_means(self, batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            trace = pyro.poutine.trace(self.guide).get_trace(batch, self.guide.local_params(batch))
        return {s: trace.nodes[s]["fn"].mean for s in self.story.latent_sites}

    def _init_strategy(self, batch):
        if self.guide is None:
            return init_to_sample
        return init_to_value(values=self._guide_means(batch))

    def run(self, batch) -> Chains:
        """Sample every chain for ``batch``; the result is also kept in :attr:`chains`, and the
        seconds spent in :attr:`seconds` (``compile`` and ``sample``, warmup included)."""
        if self.backend == "numpyro":
            return self._run_numpyro(batch)
        clock = time.perf_counter()
        draws, stats = [], []
        for _ in range(self.num_chains):
            kernel = _RecordingNUTS(
                self.story.model,
                target_accept_prob=self.target_accept,
                max_tree_depth=self.max_tree_depth,
                init_strategy=self._init_strategy(batch),
            )
            record = {"energy": [], "diverging": [], "step_size": [], "n_steps": [], "tree_depth": []}

            def hook(kernel, params, stage, i, record=record):
                if stage != "Sample":
                    return
                divergences = len(kernel._divergences)
                record["diverging"].append(divergences > sum(record["diverging"]))
                record["energy"].append(kernel.last_energy)
                record["step_size"].append(float(kernel.step_size))
                record["n_steps"].append(kernel.leapfrogs)
                record["tree_depth"].append(max(kernel.leapfrogs, 1).bit_length())

            sampler = PyroMCMC(
                kernel,
                num_samples=self.num_samples,
                warmup_steps=self.warmup,
                hook_fn=hook,
                disable_progbar=not self.progress,
            )
            # the sampler differentiates the potential even under no_grad; dropout stays off
            with torch.enable_grad(), evaluation_mode(self.story):
                sampler.run(batch)
            draws.append({k: v.detach() for k, v in sampler.get_samples().items()})
            stats.append({k: torch.tensor(v) for k, v in record.items()})
        self.chains = Chains(
            {s: torch.stack([d[s] for d in draws]) for s in self.story.latent_sites},
            {k: torch.stack([s[k] for s in stats]) for k in stats[0]},
        )
        self.seconds = {"compile": 0.0, "sample": time.perf_counter() - clock}
        return self.chains

    def _run_numpyro(self, batch) -> Chains:
        from fabula.backends.numpyro import nuts, twin

        jax_twin = twin(self.story)
        init = self._guide_means(batch) if self.guide is not None else self.story.prior_sample(batch.size)
        result = nuts(
            jax_twin,
            batch,
            {s: init[s].detach().cpu().numpy() for s in jax_twin.sites},
            num_samples=self.num_samples,
            warmup=self.warmup,
            num_chains=self.num_chains,
            target_accept=self.target_accept,
            max_tree_depth=self.max_tree_depth,
            seed=self.seed,
            progress=self.progress,
        )
        device = self.story.device
        self.chains = Chains(
            {s: torch.as_tensor(v, device=device) for s, v in result.samples.items()},
            {k: torch.as_tensor(v) for k, v in result.stats.items()},
        )
        self.seconds = {"compile": result.compile_seconds, "sample": result.sample_seconds}
        return self.chains

    def posterior(self, batch, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Draws pooled over chains, ``{site: [chains * draws, B, ...]}`` (``num_samples`` must be
        ``None`` or the pooled count: the sampler's settings fix it)."""
        total = self.num_chains * self.num_samples
        if num_samples not in (None, total):
            raise ValueError(
                f"this sampler draws {total} samples ({self.num_chains} chains x {self.num_samples})"
            )
        chains = self.run(batch)
        return {s: v.reshape(total, *v.shape[2:]) for s, v in chains.samples.items()}
