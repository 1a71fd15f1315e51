"""Torch building blocks shared by stories and guides."""

from fabula.nn.lstm import BagOfWordsEncoder, LSTMDecoder, LSTMEncoder
from fabula.nn.mlp import MLP
from fabula.nn.mode import evaluation_mode

__all__ = ["BagOfWordsEncoder", "LSTMDecoder", "LSTMEncoder", "MLP", "evaluation_mode"]
