"""ArviZ views of posteriors: every inference object's draws as ``InferenceData``, and PSIS
diagnostics of a variational posterior, and its error against a reference (NUTS). The only module of fabula that imports ArviZ (built on
``arviz.from_dict``, so that the move to ArviZ 1.x changes this file alone)."""

from fabula.diagnostics.arviz import (
    az,
    compact_summary,
    khat_summary,
    plot_diagnostics,
    plotted_coordinates,
    psis_khat,
    to_arviz,
)
from fabula.diagnostics.reference import posterior_error

__all__ = [
    "az",
    "compact_summary",
    "khat_summary",
    "plot_diagnostics",
    "plotted_coordinates",
    "posterior_error",
    "psis_khat",
    "to_arviz",
]
