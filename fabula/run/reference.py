"""The generating story of a synthetic corpus, bounded beside the trained model: a guide fitted
for it so that its NLL is estimated by the same estimators."""

from __future__ import annotations

import pyro

from fabula.data import DOCUMENTS, SENTENCES
from fabula.guides import NormalGuide, SentenceGuide
from fabula.inference import Amortized

#: The epochs the reference guide of a generating story is fitted for, by the data its story reads.
REFERENCE_EPOCHS = {DOCUMENTS: 30, SENTENCES: 10}


def reference_inference(generator, kind: str) -> Amortized:
    """Amortized VI for the (frozen) generating story of a synthetic corpus, so that its NLL is
    bounded by the same estimators as the trained model's."""
    if kind == DOCUMENTS:
        guide = NormalGuide(generator.vocab_size, generator.latent_dim, hidden=[200])
    else:
        guide = SentenceGuide(generator.vocab_size, generator.latent_dim, embed_dim=100, hidden_dim=100)
    return Amortized(generator, guide, learn_story=False, optim_args={"lr": 3e-3})


def fit_reference(generator, kind: str, train, seed: int, progress: bool = True) -> Amortized:
    """:func:`reference_inference` with its guide fitted to ``train``, with its own progress bars."""
    epochs = REFERENCE_EPOCHS[kind]
    pyro.set_rng_seed(seed)
    reference = reference_inference(generator, kind)
    if progress:
        print(f"fitting a guide for the corpus's generating story ({epochs} epochs; --no-reference skips it)")
    reference.fit(train, epochs=epochs, batch_size=64, seed=seed, progress=progress)
    return reference
