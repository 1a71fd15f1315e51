"""Real-valued vector data, for continuous stories such as :class:`~fabula.models.LinearGaussian`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


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


class Vectors:
    """A dataset of ``[num_data, dim]`` rows with the same batching interface as corpora."""

    def __init__(self, x: torch.Tensor):
        if x.dim() != 2:
            raise ValueError(f"expected a [num_data, dim] tensor, got shape {tuple(x.shape)}")
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index, device="cpu") -> VectorBatch:
        index = torch.as_tensor(index, dtype=torch.long)
        return VectorBatch(self.x[index], index).to(device)

    def batches(
        self, batch_size: int, shuffle: bool = False, seed: int = 0, device="cpu"
    ) -> Iterator[VectorBatch]:
        n = len(self)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
        )
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size], device)

    def num_batches(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)
