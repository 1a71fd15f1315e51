"""Torch building blocks shared by stories and guides."""

from fabula.nn.mlp import MLP

__all__ = ["MLP"]
