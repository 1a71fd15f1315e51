"""The inference-object contract: ``step``, ``fit``, ``local_params`` and ``posterior``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from fabula.evaluation.bounds import trace_guide


class Inference:
    """Base of the inference objects: how a story's latents are guessed and its parameters fit.

    Subclasses implement :meth:`step`. ``fit`` loops over epochs with a progress bar; the
    shuffling order of epoch ``e`` is a function of ``(seed, e)`` only, so an interrupted fit
    resumed from a checkpoint (see :mod:`fabula.checkpoint`) replays the same batches.
    """

    def __init__(self, story, guide=None):
        self.story = story
        self.guide = guide
        self.num_steps = 0

    def step(self, batch) -> dict[str, float]:
        raise NotImplementedError

    def end_epoch(self) -> dict[str, float]:
        """Called after each epoch of :meth:`fit`; returns metrics to log (default: none)."""
        return {}

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        """The variational parameters λ this object uses for ``batch`` (default: the guide's)."""
        return self.guide.local_params(batch)

    @torch.no_grad()
    def posterior(self, batch, num_samples: int) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of each latent site from q_λ: ``{site: [S, B, ...]}``."""
        trace = trace_guide(self.guide, batch, num_samples, self.local_params(batch))
        return {site: trace.nodes[site]["value"] for site in self.story.latent_sites}

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every module whose weights a checkpoint must hold."""
        out = {"story": self.story}
        if self.guide is not None:
            out["guide"] = self.guide
        return out

    def state_dict(self) -> dict:
        """Training state beyond the modules' weights (step count, optimiser)."""
        return {"num_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        self.num_steps = int(state["num_steps"])

    def fit(
        self,
        data,
        epochs: int = 1,
        batch_size: int = 64,
        seed: int = 0,
        start_epoch: int = 0,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        progress: bool = True,
    ) -> list[dict]:
        """Train for epochs ``start_epoch + 1 .. epochs``; return each epoch's mean metrics.

        ``on_epoch_end(epoch, metrics)`` runs after each epoch (evaluation, checkpoints).
        """
        device = self.story.device
        history = []
        for epoch in range(start_epoch, epochs):
            sums: dict[str, float] = {}
            seen = 0
            bar = tqdm(
                data.batches(batch_size, shuffle=True, seed=seed * 1_000_003 + epoch, device=device),
                total=data.num_batches(batch_size),
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not progress,
                leave=False,
            )
            for batch in bar:
                metrics = self.step(batch)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * batch.size
                seen += batch.size
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", refresh=False)
            summary = {"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()}, **self.end_epoch()}
            history.append(summary)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, summary)
        return history
