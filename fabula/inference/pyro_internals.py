"""The one place fabula reaches into Pyro's private API: NUTS that records what it does not keep.

Pyro's NUTS keeps neither the Hamiltonian at the start of a trajectory nor the number of leapfrog
steps it took, and counts divergences in a private list. :class:`RecordingNUTS` reads them
through the private members named in :data:`INTERNALS`, written against Pyro
:data:`WRITTEN_FOR` (``pyproject.toml`` pins ``pyro-ppl`` to that minor version);
``tests/test_mcmc_kernels.py`` fails, naming the member, when Pyro no longer has one of them
with the signature below. Everything else fabula asks of the kernel (``setup``, ``sample``,
``initial_params``, ``transforms``, ``step_size``) is Pyro's public ``MCMCKernel``/``HMC`` API.
"""

from __future__ import annotations

from pyro.infer import NUTS

WRITTEN_FOR = "1.9"
"""The Pyro minor version whose private members :class:`RecordingNUTS` uses."""

INTERNALS: dict[str, tuple[str, ...] | None] = {
    # methods of pyro.infer.NUTS (from HMC or NUTS) that RecordingNUTS overrides or calls
    "_sample_r": ("self", "name"),
    "_build_basetree": ("self", "z", "r", "z_grads", "log_slice", "direction", "energy_current"),
    "_kinetic_energy": ("self", "r_unscaled"),
    # attributes an HMC/NUTS instance holds (set by HMC._reset and HMC._cache); None: not a method
    "_potential_energy_last": None,
    "_divergences": None,
}
"""Each private member used: a method's parameter names, or ``None`` for an instance attribute."""


class RecordingNUTS(NUTS):
    """NUTS that also records, per transition, the Hamiltonian at the start of the trajectory
    (potential plus kinetic energy once the momentum is drawn: Stan's ``energy__`` up to the
    integrator's error, what ArviZ's energy plot and BFMI read) in :attr:`last_energy`, and the
    leapfrog steps it took in :attr:`leapfrogs`; :attr:`divergences` counts the divergent
    transitions after warmup."""

    last_energy: float = float("nan")
    leapfrogs: int = 0

    def _sample_r(self, name):
        # called once per transition, before the trajectory is built
        r, r_unscaled = super()._sample_r(name)
        self.last_energy = float(self._kinetic_energy(r_unscaled) + self._potential_energy_last)
        self.leapfrogs = 0
        return r, r_unscaled

    def _build_basetree(self, *args, **kwargs):
        # one leapfrog step
        self.leapfrogs += 1
        return super()._build_basetree(*args, **kwargs)

    @property
    def divergences(self) -> int:
        """Divergent transitions so far after warmup (Pyro does not count those of warmup)."""
        return len(self._divergences)
