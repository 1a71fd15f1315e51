"""Multilayer perceptrons shared by stories and guides."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from fabula.errors import SettingsError

#: The activations an :class:`MLP` takes by name.
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus}


class MLP(nn.Sequential):
    """``Linear -> act -> ... -> Linear``: ``hidden`` sizes between ``in_features`` and ``out_features``."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu"):
        if activation not in ACTIVATIONS:
            raise SettingsError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
