"""Training objectives that modify a bound, and the bound each modifies.

An objective is a Pyro ``ELBO`` (anything with ``differentiable_loss(model, guide, batch)``).
Objectives that add training-only terms to a bound (free bits, DGMVAE's dispersion) declare it
as ``bound``: refinement of λ and evaluation use that bound, never the training terms.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pyro.infer import ELBO

from fabula.inference.mean_field import MeanFieldELBO


@runtime_checkable
class ModifiesBound(Protocol):
    """An objective made of a bound and training-only terms."""

    @property
    def bound(self) -> ELBO: ...


def bound_of(objective: ELBO | None) -> ELBO:
    """The bound ``objective`` is (default: :class:`~fabula.inference.mean_field.MeanFieldELBO`),
    or the one it modifies."""
    if objective is None:
        return MeanFieldELBO()
    return objective.bound if isinstance(objective, ModifiesBound) else objective
