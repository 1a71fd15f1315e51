"""Real-valued vector data, for continuous stories such as :class:`~fabula.models.LinearGaussian`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fabula.data.corpus import Corpus


@dataclass
class VectorBatch:
    """Rows ``x[b]`` and their positions ``index[b]`` in the dataset."""

    x: torch.Tensor
    index: torch.Tensor

    @property
    def inputs(self) -> torch.Tensor:
        return self.x

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> VectorBatch:
        return VectorBatch(self.x.to(device), self.index.to(device))


class Vectors(Corpus):
    """A corpus of ``[num_data, dim]`` real-valued rows."""

    def __init__(self, x: torch.Tensor):
        if x.dim() != 2:
            raise ValueError(f"expected a [num_data, dim] tensor, got shape {tuple(x.shape)}")
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index, device="cpu") -> VectorBatch:
        """The rows at ``index`` and their positions, on ``device``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return VectorBatch(self.x[index], index).to(device)

    def _select(self, index: torch.Tensor) -> Vectors:
        return Vectors(self.x[index])
