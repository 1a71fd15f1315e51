"""Aggressive encoder training (He et al. 2019) against the lagging inference network."""

from __future__ import annotations

import torch

from fabula.evaluation.bounds import mutual_information, trace_guide
from fabula.inference.amortized import Amortized


class Aggressive(Amortized):
    r"""Amortized VI whose encoder is first trained to near-optimality before each decoder step.

    While *aggressive*, each :meth:`step` updates the guide alone on fresh training batches
    (at most ``inner_steps``, stopping once the loss summed over ``patience`` steps no longer
    falls), then updates the story once on the given batch. After each epoch the mutual
    information :math:`I_q(x; z)` is estimated on ``validation``
    (:func:`~fabula.evaluation.bounds.mutual_information`); once it stops rising, training
    continues as plain :class:`~fabula.inference.Amortized`. Guide and story have separate
    optimizers of the same kind (the inherited joint ``optimizer`` is not used).

    References: J. He, D. Spokoyny, G. Neubig, T. Berg-Kirkpatrick. Lagging Inference Networks
    and Posterior Collapse in Variational Autoencoders. ICLR 2019.
    """

    def __init__(
        self,
        story,
        guide,
        data,
        validation,
        *,
        batch_size: int = 32,
        inner_steps: int = 100,
        patience: int = 15,
        seed: int = 0,
        **settings,
    ):
        if not story.latent_sites:
            raise ValueError(
                "aggressive encoder training needs a story with latent sites (it has no latent sites)"
            )
        super().__init__(story, guide, **settings)
        self.data, self.validation, self.batch_size = data, validation, batch_size
        self.inner_steps, self.patience, self.seed = inner_steps, patience, seed
        self.split_optimizers()
        self.aggressive = True
        self.best_mi = float("-inf")
        self._stream = None
        self._pass = 0

    def _next_batch(self):
        """Training batches for the inner loop, reshuffled on each pass over the data; the
        stream restarts at every epoch's end, so a resumed run draws the same batches."""
        while True:
            if self._stream is None:
                seed = self.seed * 1_000_003 + 7919 * (self._pass + 1)
                self._stream = self.data.batches(
                    self.batch_size, shuffle=True, seed=seed, device=self.story.device
                )
                self._pass += 1
            batch = next(self._stream, None)
            if batch is not None:
                return batch
            self._stream = None

    def step(self, batch) -> dict[str, float]:
        beta = self.annealing(self.num_steps)
        inner = 0
        if self.aggressive:
            best, window = float("inf"), 0.0
            for inner in range(1, self.inner_steps + 1):
                window += self.descend(self.loss(self._next_batch()), self.guide_params, self.guide_optimizer)
                if inner % self.patience == 0:
                    if window >= best:
                        break
                    best, window = window, 0.0
            value = self.descend(self.loss(batch), self.story_params, self.story_optimizer)
        else:
            value = self.descend(
                self.loss(batch),
                self.story_params + self.guide_params,
                self.story_optimizer,
                self.guide_optimizer,
            )
        self.num_steps += 1
        return {"loss": value, "beta": beta, "inner_steps": float(inner)}

    @torch.no_grad()
    def end_epoch(self) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in self.validation.batches(self.batch_size, device=self.story.device):
            trace = trace_guide(self.guide, batch, 1, self.local_params(batch))
            total += float(mutual_information(trace, self.story.latent_sites)) * batch.size
            count += batch.size
        mi = total / count
        self._stream, self._pass = None, self._pass + 1
        if self.aggressive and mi <= self.best_mi:
            self.aggressive = False
        self.best_mi = max(self.best_mi, mi)
        return {"validation_mi": mi, "aggressive": float(self.aggressive)}

    def state_dict(self) -> dict:
        return {
            "num_steps": self.num_steps,
            "guide_optimizer": self.guide_optimizer.state_dict(),
            "story_optimizer": self.story_optimizer.state_dict(),
            "aggressive": self.aggressive,
            "best_mi": self.best_mi,
            "pass": self._pass,
        }

    def load_state_dict(self, state: dict) -> None:
        self.num_steps = int(state["num_steps"])
        self.guide_optimizer.load_state_dict(state["guide_optimizer"])
        self.story_optimizer.load_state_dict(state["story_optimizer"])
        self.aggressive, self.best_mi, self._pass = state["aggressive"], state["best_mi"], state["pass"]
        self._stream = None
