"""The training objective a run's flags (``--elbo``, ``--free-bits``, ``--anneal``) choose for a
story, by what its latents allow; a recipe names one of these (or its own)."""

from __future__ import annotations

from pyro.infer import Trace_ELBO, TraceEnum_ELBO

from fabula.errors import SettingsError
from fabula.inference import FreeBitsELBO
from fabula.inference.objectives import default_objective


def continuous_objective(story_settings, inference, guide=None):
    """The objective of a story with continuous latents: the ELBO (``--elbo``), or free bits."""
    if inference.free_bits is not None:
        if inference.elbo != "meanfield":
            raise SettingsError("free bits floor the analytic KL; they apply with --elbo meanfield")
        return FreeBitsELBO(inference.free_bits)
    return Trace_ELBO() if inference.elbo == "trace" else None


def binary_objective(story_settings, inference, guide=None):
    """The ELBO of a story with binary latents for the VI kinds: ``Trace_ELBO``, whose encoder
    gradient is the score function (REINFORCE, per datum, no baseline). ``wake-sleep``, ``rws``
    and ``nvil`` bring their own losses and never ask for it."""
    if inference.free_bits is not None:
        raise SettingsError("--free-bits floors a reparameterised KL; it does not apply to binary latents")
    if inference.elbo != "trace":
        raise SettingsError(
            "binary latents are not reparameterisable, so the mean-field ELBO does not apply: "
            "give --elbo trace (REINFORCE), or train with nvil, rws or wake-sleep, which bring their own losses"
        )
    return Trace_ELBO()


def likelihood_objective(story_settings, inference, guide=None):
    """The objective of a story without latents (its log-likelihood): KL remedies do not apply."""
    if inference.free_bits is not None or inference.anneal:
        raise SettingsError("the story has no latent: --free-bits and --anneal do not apply (give none)")
    return continuous_objective(story_settings, inference, guide=None)


def by_supports(story_settings, inference, guide=None):
    """The objective of a user's story by its guide's sites
    (:func:`~fabula.inference.objectives.default_objective`): finite discrete latents summed out
    (``TraceEnum_ELBO``), binary ones by the score function (``Trace_ELBO``), continuous ones by
    the ELBO of ``--elbo`` or free bits. Without the guide (a configuration checked before the
    story is built) it decides nothing yet."""
    if guide is None:
        return None
    default = default_objective(guide)
    if isinstance(default, TraceEnum_ELBO | Trace_ELBO):
        if inference.free_bits is not None:
            raise SettingsError(
                "--free-bits floors a reparameterised analytic KL; this story's latents are discrete "
                f"or have no analytic KL, so it trains on {type(default).__name__}"
            )
        return default
    return continuous_objective(story_settings, inference, guide)
