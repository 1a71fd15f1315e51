r"""MCMC over a story's local latents, given its trained global parameters."""

from __future__ import annotations

import dataclasses

import pyro
import torch

from fabula.errors import SettingsError
from fabula.inference.base import Inference
from fabula.inference.kernels import NUTS_KERNELS, Chains, Kernel
from fabula.nn.mode import evaluation_mode
from fabula.traces import has_mean


class MCMC(Inference):
    r"""Draws of :math:`p(z \mid x, \theta)` for a plated batch of independent posteriors, the
    story's global parameters :math:`\theta` held fixed, by a :class:`~fabula.inference.kernels.Kernel`.

    ``kernel`` is any kernel object; without one, ``backend`` picks No-U-Turn sampling with
    ``target_accept`` (default 0.8) and ``max_tree_depth`` (default 10):
    ``"pyro"`` (the default) Pyro's NUTS on the story, one joint chain over the batch
    (:class:`~fabula.inference.kernels.PyroNUTS`); ``"numpyro"`` NumPyro's NUTS on the JAX twin
    registered for the story's class or, without one, on the story's own log joint called from
    JAX, per-datum chains, the whole run compiled (:class:`~fabula.inference.kernels.NumPyroNUTS`;
    ``chains.info["twin"]`` says which).

    MCMC has no variational parameters (``source`` is ``None``) and does not train. A
    ``guide`` only places the chains' start, at its posterior mean (a draw for a categorical
    site; else each chain starts at a draw from the story's prior trace); it is kept as
    :attr:`guide`. :meth:`run` samples all ``num_chains`` chains
    (``warmup`` adapting transitions, then ``num_samples`` kept) with ``seed``; :attr:`chains`
    keeps the last run, per chain, with the kernel's statistics, for
    :func:`fabula.diagnostics.to_arviz`; :meth:`posterior` pools its draws over chains.

    References: M. Hoffman, A. Gelman. The No-U-Turn Sampler. JMLR 2014.
    """

    BACKENDS = tuple(NUTS_KERNELS)

    def __init__(
        self,
        story,
        guide=None,
        num_samples: int = 500,
        warmup: int = 500,
        num_chains: int = 1,
        target_accept: float | None = None,
        max_tree_depth: int | None = None,
        progress: bool = True,
        backend: str | None = None,
        seed: int = 0,
        kernel: Kernel | None = None,
    ):
        nuts_settings = {"backend": backend, "target_accept": target_accept, "max_tree_depth": max_tree_depth}
        if kernel is None:
            backend = backend or "pyro"
            if backend not in NUTS_KERNELS:
                raise SettingsError(f"unknown MCMC backend {backend!r}; choose from {self.BACKENDS}")
            kernel = NUTS_KERNELS[backend](
                target_accept=0.8 if target_accept is None else target_accept,
                max_tree_depth=10 if max_tree_depth is None else max_tree_depth,
            )
        elif not isinstance(kernel, Kernel):
            raise SettingsError(
                f"kernel must be a fabula.inference.kernels.Kernel, got {type(kernel).__name__}"
            )
        elif given := [k for k, v in nuts_settings.items() if v is not None]:
            raise SettingsError(
                f"{', '.join(given)} choose the NUTS kernel; with kernel= set them on the kernel"
            )
        super().__init__(story)
        self.guide = guide  #: the guide that places the chains' start (or ``None``)
        self.kernel = kernel
        self.num_samples, self.warmup, self.num_chains = num_samples, warmup, num_chains
        self.progress, self.seed = progress, seed
        self.chains: Chains | None = None  #: the last run's chains (``None`` before :meth:`run`)
        self._batch = None

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds of the last run: ``compile`` and ``sample`` (warmup included)."""
        return self.chains.seconds if self.chains is not None else {}

    @torch.no_grad()
    def _guide_means(self, batch) -> dict[str, torch.Tensor]:
        """The chains' start: the guide's posterior mean of each continuous or binary site, a
        draw of each other site (a categorical's mean is no state); a site the guide lacks is
        left to the kernel (a prior draw)."""
        with evaluation_mode(self.guide):
            trace = pyro.poutine.trace(self.guide).get_trace(batch, self.guide.local_params(batch))
        return {s: _start(trace.nodes[s]) for s in self.story.latent_sites if s in trace.nodes}

    def run(self, batch) -> Chains:
        """Sample every chain for ``batch`` (the story in evaluation mode); the result is also
        kept in :attr:`chains`."""
        init = self._guide_means(batch) if self.guide is not None else None
        with evaluation_mode(self.story):
            self.chains = self.kernel.run(
                self.story,
                batch,
                init,
                num_samples=self.num_samples,
                warmup=self.warmup,
                num_chains=self.num_chains,
                seed=self.seed,
                progress=self.progress,
            )
        self._batch = (batch, self._state())
        return self.chains

    def _state(self) -> tuple:
        """What a run depends on besides the data: the settings, the kernel and the parameters of
        the story and the guide (their storage and in-place versions)."""
        settings = (self.num_samples, self.warmup, self.num_chains, self.seed, id(self.kernel))
        modules = [self.story] + ([self.guide] if self.guide is not None else [])
        return settings, tuple((p.data_ptr(), p._version) for m in modules for p in m.parameters())

    def _same(self, batch) -> bool:
        if self.chains is None:
            return False
        last, state = self._batch
        if state != self._state():
            return False
        if last is batch:
            return True
        if not (dataclasses.is_dataclass(batch) and type(last) is type(batch)):
            return False
        return all(_equal(getattr(last, f.name), getattr(batch, f.name)) for f in dataclasses.fields(batch))

    def chains_for(self, batch) -> Chains:
        """The last run's chains if it was on the same data (the same batch, or an equal one: a
        batch rebuilt by :func:`~fabula.evaluation.evaluate` counts) with the settings and the
        story's parameters unchanged since, else a new run's (the seed fixes a run, so the two
        agree)."""
        return self.chains if self._same(batch) else self.run(batch)

    def posterior(self, batch, num_samples: int | None = None) -> dict[str, torch.Tensor]:
        """The draws of :meth:`chains_for` pooled over chains, ``{site: [S, B, ...]}``: all
        ``chains * draws`` of them (``num_samples=None``, or that count), or ``num_samples`` fewer
        thinned evenly from the pooled draws (chain by chain, the last of every stride of
        ``chains * draws / num_samples``, so each chain gives its share); more than the sampler
        draws is refused, naming its count (the sampler's settings fix it)."""
        total = self.num_chains * self.num_samples
        if num_samples is not None and not 1 <= num_samples <= total:
            raise SettingsError(
                f"num_samples={num_samples}: this sampler draws {total} samples ({self.num_chains} "
                f"chains x {self.num_samples}); ask for 1 to {total}, or set num_samples on the MCMC"
            )
        chains = self.chains_for(batch)
        pooled = {s: v.reshape(total, *v.shape[2:]) for s, v in chains.samples.items()}
        if num_samples is None or num_samples == total:
            return pooled
        kept = (torch.arange(1, num_samples + 1) * total) // num_samples - 1
        return {s: v[kept.to(v.device)] for s, v in pooled.items()}


def _start(site: dict) -> torch.Tensor:
    if not has_mean(site["fn"]):
        return site["value"]
    try:
        return site["fn"].mean
    except NotImplementedError:
        return site["value"]


def _equal(a, b) -> bool:
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    return a == b
