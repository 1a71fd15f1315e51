"""Non-amortized VI: every training datum keeps its own variational parameters."""

from __future__ import annotations

import torch
from torch import nn

from fabula.inference.amortized import Amortized


class NonAmortized(Amortized):
    r"""Variational inference with a table of per-datum parameters :math:`\lambda_d`, learnt
    jointly with the story by the same ELBO as :class:`~fabula.inference.Amortized`.

    λ is looked up by ``batch.index`` instead of computed by an encoder (the guide's encoder
    is unused; its :meth:`~fabula.guides.Guide.init_params` gives the initial table, the prior).
    The posterior is therefore defined only for the ``num_data`` training data. With a
    momentum optimizer (the default Adam) rows of data outside the batch keep moving on their
    momentum; pass ``optimizer=torch.optim.SGD`` for updates confined to the batch's rows.

    References: M. Hoffman, D. Blei, C. Wang, J. Paisley. Stochastic Variational Inference. JMLR 2013.
    """

    def __init__(self, story, guide, num_data: int, **settings):
        self.table = nn.ParameterDict(
            {k: nn.Parameter(v) for k, v in guide.init_params(num_data, story.device).items()}
        )
        self.num_data = num_data
        super().__init__(story, guide, **settings)

    def trainable_parameters(self):
        if self.learn_story:
            yield from self.story.parameters()
        yield from self.table.parameters()

    def local_params(self, batch) -> dict[str, torch.Tensor]:
        if int(batch.index.max()) >= self.num_data:
            raise IndexError(f"datum {int(batch.index.max())} has no parameters (table of {self.num_data})")
        return {k: v[batch.index] for k, v in self.table.items()}

    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "table": self.table}
