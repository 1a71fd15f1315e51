"""Torch building blocks shared by stories and guides."""

from fabula.nn.lstm import BagOfWordsEncoder, LSTMDecoder, LSTMEncoder
from fabula.nn.mlp import MLP

__all__ = ["BagOfWordsEncoder", "LSTMDecoder", "LSTMEncoder", "MLP"]
