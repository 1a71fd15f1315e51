"""Training objectives that modify a bound, and the bound each modifies.

An objective is a Pyro ``ELBO`` (anything with ``differentiable_loss(model, guide, batch)``).
Objectives that add training-only terms to a bound (free bits, DGMVAE's dispersion) declare it
as ``bound``: refinement of λ and evaluation use that bound, never the training terms.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pyro.infer import ELBO, TraceMeanField_ELBO


@runtime_checkable
class ModifiesBound(Protocol):
    """An objective made of a bound and training-only terms."""

    @property
    def bound(self) -> ELBO: ...


def bound_of(objective: ELBO | None) -> ELBO:
    """The bound ``objective`` is (default: ``TraceMeanField_ELBO``), or the one it modifies."""
    if objective is None:
        return TraceMeanField_ELBO()
    return objective.bound if isinstance(objective, ModifiesBound) else objective
