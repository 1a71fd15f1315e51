"""The library's user-facing errors: bad data, bad settings, a missing or unfit run, a request an
object cannot serve, a diverged fit. The ``fabula`` command prints these in one line (exit 2);
any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class FabulaError(Exception):
    """Base of the errors that are the user's to fix."""


class SettingsError(FabulaError, ValueError):
    """An impossible or unknown setting, naming it and what it accepts."""


class UsageError(FabulaError, ValueError):
    """A request the object cannot serve (a posterior for data it never saw, say), naming what to use."""


class RunError(FabulaError, OSError):
    """A run directory that is missing, already taken, or does not hold what was asked."""


class DivergenceError(FabulaError, FloatingPointError):
    """A non-finite loss or bound: the fit diverged."""
