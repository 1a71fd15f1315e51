"""Evaluation mode for the duration of a computation."""

from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation_mode(*modules: nn.Module | None):
    """Put ``modules`` in evaluation mode (dropout off) inside the block, and back after it.

    Dropout is a training device: every bound, perplexity and posterior is computed without it.
    """
    modules = [m for m in modules if m is not None]
    before = [[sub.training for sub in m.modules()] for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flags in zip(modules, before, strict=True):
            for sub, flag in zip(m.modules(), flags, strict=True):
                sub.training = flag
