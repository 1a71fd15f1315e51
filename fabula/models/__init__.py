"""Generative stories."""

from fabula.models.linear_gaussian import LinearGaussian
from fabula.models.nvdm import NVDM
from fabula.models.story import DATA_DIM, Story

__all__ = ["DATA_DIM", "LinearGaussian", "NVDM", "Story"]
