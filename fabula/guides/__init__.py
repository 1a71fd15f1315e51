"""Variational families for the stories."""

from fabula.guides.guide import Guide
from fabula.guides.normal import NormalGuide

__all__ = ["Guide", "NormalGuide"]
