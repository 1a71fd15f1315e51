r"""λ sources: where an inference object's per-datum variational parameters come from.

Each wraps a :class:`~fabula.guides.Guide` (whose ``forward(batch, params)`` samples from
:math:`q_\lambda`) and says which λ it is run at; they compose:

* :class:`Encoded` -- the guide's encoder, :math:`\lambda = \mathrm{enc}(x)` (amortized VI);
* :class:`Tabulated` -- a table of :math:`\lambda_d` per training datum (non-amortized VI);
* :class:`FromPrior` -- the guide's prior values, the start of per-instance SVI;
* :class:`Refined` -- K gradient steps (:class:`~fabula.inference.refinement.Refinement`) from any
  source, detached (VAE+SVI, test-time refinement) or differentiated through (SA-VAE).
"""

from __future__ import annotations

import torch
from torch import nn

from fabula.errors import SettingsError, UsageError
from fabula.inference.objectives import bound_of
from fabula.inference.refinement import Refinement, check_refinable


class Source:
    """A λ source over ``guide``: :meth:`local_params`, and the parameters and modules it owns."""

    def __init__(self, guide):
        self.guide = guide

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters that training updates through this source."""
        return []

    def modules(self) -> dict[str, nn.Module]:
        """Modules of the source's own that a checkpoint holds (beyond story and guide)."""
        return {}


class Encoded(Source):
    r""":math:`\lambda = \mathrm{enc}(x)`: the guide's :meth:`~fabula.guides.Guide.local_params`."""

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        return self.guide.local_params(batch)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.guide.parameters() if p.requires_grad]


class Fitted(nn.Module):
    r"""Which datum each row of a λ table was fitted to: two signatures of the row's inputs,
    :math:`\sum_j x_j \cos(\phi j + 1)` and :math:`\sum_j x_j \sin(\phi j + 1)` (:math:`\phi`
    the golden ratio), recorded when the row is first trained; ``NaN`` while it is not. Zero
    padding leaves them unchanged, so a sentence signs alike in any padded batch."""

    def __init__(self, num_data: int):
        super().__init__()
        self.register_buffer("signature", torch.full((num_data, 2), float("nan"), dtype=torch.float64))

    @staticmethod
    def sign(inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.reshape(inputs.shape[0], -1).double()
        phase = torch.arange(x.shape[1], dtype=torch.float64, device=x.device) * 1.618033988749895 + 1
        return torch.stack([x @ phase.cos(), x @ phase.sin()], -1)


class Tabulated(Source):
    r"""A table of :math:`\lambda_d` for the ``num_data`` training data, looked up by
    ``batch.index`` and started at the guide's :meth:`~fabula.guides.Guide.init_params` (the
    prior). It is defined for the data it was fitted on only: a training step records each
    row's datum (:class:`Fitted`), and a lookup for another datum at that index, or for a row
    never trained, is refused (fit λ for new data by refinement from the prior, e.g.
    :class:`~fabula.inference.StochasticVI`).

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(self, guide, num_data: int, device: torch.device | str = "cpu"):
        super().__init__(guide)
        self.num_data = num_data
        self.table = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in guide.init_params(num_data, device).items()}
        )
        self.fitted = Fitted(num_data).to(device)

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        index = batch.index
        if int(index.max()) >= self.num_data:
            raise UsageError(
                f"datum {int(index.max())} has no variational parameters (a table of {self.num_data})"
            )
        signature, known = Fitted.sign(batch.inputs), self.fitted.signature[index]
        new = known[:, 0].isnan()
        if new.any():
            if not torch.is_grad_enabled():
                raise UsageError(
                    f"datum {int(index[new][0])} has no fitted variational parameters: a table of λ holds "
                    "the data it was trained on; for other data fit λ by refinement from the prior "
                    "(fabula.inference.StochasticVI(story, guide, Refinement(steps=K)))"
                )
            self.fitted.signature[index[new]] = signature[new]
        other = ~torch.isclose(signature, self.fitted.signature[index], rtol=1e-9, atol=1e-9).all(-1)
        if other.any():
            raise UsageError(
                f"datum {int(index[other][0])} of this batch is not the datum its row of λ was fitted to: a "
                "table of λ holds the data it was trained on; for other data fit λ by refinement from "
                "the prior (fabula.inference.StochasticVI(story, guide, Refinement(steps=K)))"
            )
        return {k: v[index] for k, v in self.table.items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.table.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"table": self.table, "table_data": self.fitted}


class FromPrior(Source):
    """The guide's :meth:`~fabula.guides.Guide.init_params` for every datum (the prior), with
    Gaussian noise of scale ``init_scale`` when it is positive."""

    def __init__(self, story, guide, init_scale: float = 0.0):
        if init_scale < 0:
            raise SettingsError(f"init_scale must be >= 0, got {init_scale}")
        super().__init__(guide)
        self.story, self.init_scale = story, init_scale

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = self.guide.init_params(batch.size, self.story.device)
        if self.init_scale > 0:
            start = {k: v + self.init_scale * torch.randn_like(v) for k, v in start.items()}
        return start


class Refined(Source):
    r""":math:`\lambda_K`: K steps of ``refinement`` from the λ of ``start``, on the bound of
    ``objective`` (:func:`~fabula.inference.objectives.bound_of`: the objective itself, or the
    bound a training objective such as free bits modifies; ``MeanFieldELBO`` for ``None``).

    ``differentiable=False`` detaches :math:`\lambda_0` and the result (VAE+SVI, test-time
    refinement); ``differentiable=True`` keeps the K steps in the graph while gradients are
    enabled, so training differentiates through them (SA-VAE), and runs them detached under
    ``torch.no_grad`` (evaluation).
    """

    def __init__(self, story, start: Source, refinement: Refinement, objective=None, differentiable=False):
        super().__init__(start.guide)
        self.story, self.start, self.refinement = story, start, refinement
        self.objective, self.differentiable = bound_of(objective), differentiable
        self._checked = False

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        start = self.start.local_params(batch)
        if not self._checked:
            check_refinable(self.guide, batch, start, self.objective)
            self._checked = True
        differentiable = self.differentiable and torch.is_grad_enabled()
        if not differentiable:
            start = {k: v.detach() for k, v in start.items()}
        return self.refinement.run(
            self.story, self.guide, batch, start, differentiable=differentiable, objective=self.objective
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.start.trainable_parameters() if self.differentiable else []

    def modules(self) -> dict[str, nn.Module]:
        return self.start.modules()
