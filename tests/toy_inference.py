"""A toy inference kind in a module of its own, registered with one call: amortized VI whose
encoder output is shrunk towards the prior. ``test_cli`` uses it from every command."""

from fabula.inference import Amortized, Encoded
from fabula.inference.kinds import KINDS, InferenceKind, register


class Shrunk(Encoded):
    """λ = enc(x) / 2."""

    def local_params(self, batch):
        return {k: v / 2 for k, v in self.guide.local_params(batch).items()}


class ToyVI(Amortized):
    def __init__(self, story, guide, **settings):
        super(Amortized, self).__init__(story, Shrunk(guide), **settings)


if "toy" not in KINDS:
    register(
        InferenceKind(
            "toy",
            "amortized VI with a shrunk encoder",
            lambda s, _: ToyVI(s.story, s.guide, **s.variational()),
        )
    )
