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


class Tabulated(Source):
    r"""A table of :math:`\lambda_d` for the ``num_data`` training data, looked up by
    ``batch.index`` and started at the guide's :meth:`~fabula.guides.Guide.init_params` (the
    prior). It is defined for those data only.

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(self, guide, num_data: int, device: torch.device | str = "cpu"):
        super().__init__(guide)
        self.num_data = num_data
        self.table = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in guide.init_params(num_data, device).items()}
        )

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        if int(batch.index.max()) >= self.num_data:
            raise UsageError(
                f"datum {int(batch.index.max())} has no variational parameters (a table of {self.num_data})"
            )
        return {k: v[batch.index] for k, v in self.table.items()}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.table.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"table": self.table}


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
    bound a training objective such as free bits modifies; ``TraceMeanField_ELBO`` for ``None``).

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
