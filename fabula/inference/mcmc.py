"""MCMC over a story's local latents, given its trained global parameters (Pyro's NUTS)."""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro.infer import MCMC as PyroMCMC
from pyro.infer import NUTS
from pyro.infer.autoguide.initialization import init_to_sample, init_to_value

from fabula.inference.base import Inference


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

    Chains run one after another, each from the guide's posterior mean when a guide is given
    (else from a prior draw). :meth:`posterior` returns the draws pooled over chains;
    :attr:`chains` keeps them per chain with the sampler's statistics (energy, divergences, step
    size, leapfrog steps, tree depth) for :func:`fabula.diagnostics.to_arviz`.

    References: M. Hoffman, A. Gelman. The No-U-Turn Sampler. JMLR 2014.
    """

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
    ):
        super().__init__(story, guide)
        self.num_samples, self.warmup, self.num_chains = num_samples, warmup, num_chains
        self.target_accept, self.max_tree_depth, self.progress = target_accept, max_tree_depth, progress
        self.chains: Chains | None = None

    def step(self, batch):
        raise NotImplementedError("MCMC samples posteriors of a trained story; it does not train")

    def _init_strategy(self, batch):
        if self.guide is None:
            return init_to_sample
        with torch.no_grad():
            trace = pyro.poutine.trace(self.guide).get_trace(batch, self.guide.local_params(batch))
        return init_to_value(values={s: trace.nodes[s]["fn"].mean for s in self.story.latent_sites})

    def run(self, batch) -> Chains:
        """Sample every chain for ``batch``; the result is also kept in :attr:`chains`."""
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
            with torch.enable_grad():  # the sampler differentiates the potential even under no_grad
                sampler.run(batch)
            draws.append({k: v.detach() for k, v in sampler.get_samples().items()})
            stats.append({k: torch.tensor(v) for k, v in record.items()})
        self.chains = Chains(
            {s: torch.stack([d[s] for d in draws]) for s in self.story.latent_sites},
            {k: torch.stack([s[k] for s in stats]) for k in stats[0]},
        )
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
