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


def default_objective(guide) -> ELBO | None:
    r"""The training objective that the sites of a :class:`~fabula.guides.SupportGuide` need:

    * ``TraceEnum_ELBO(max_plate_nesting=1)`` when a site is finite discrete and marked for
      enumeration: the sum over its values is exact (a scalar categorical, one-hot or binary site);
    * else ``Trace_ELBO()`` when a site is discrete and sampled (binary or categorical units with
      event dimensions): its gradient needs score-function terms, which the mean-field ELBO refuses;
    * else ``None``, fabula's default :class:`~fabula.inference.mean_field.MeanFieldELBO` (every
      site reparameterised). Its KL is analytic where torch knows the pair; for a site pushed onto
      a constrained support (a ``TransformedDistribution``, whose KL to the prior torch rarely
      knows) it is :math:`\log q(z) - \log p(z)` at the reparameterised draw, the term
      ``Trace_ELBO`` would use, while the other sites keep their analytic KL.

    Another guide is refused: its story names its own objective.
    """
    from fabula.errors import SettingsError
    from fabula.guides.auto import SupportGuide

    if not isinstance(guide, SupportGuide):
        raise SettingsError(
            f"default_objective chooses for a SupportGuide's sites; a {type(guide).__name__} is trained "
            "with its story's objective"
        )
    if guide.enumerated_sites:
        from pyro.infer import TraceEnum_ELBO

        return TraceEnum_ELBO(max_plate_nesting=1)
    if guide.score_function_sites:
        from pyro.infer import Trace_ELBO

        return Trace_ELBO()
    return None
