"""Synthetic corpora sampled from fixed random stories: embedded defaults that need no download."""

from __future__ import annotations

import torch

from fabula.data.bow import BagOfWords
from fabula.data.vocab import Vocab
from fabula.models.nvdm import NVDM


def random_nvdm(seed: int = 0, vocab_size: int = 500, latent_dim: int = 5, spread: float = 1.5) -> NVDM:
    r"""An NVDM with weights :math:`R_{vk} \sim \mathcal N(0, \mathrm{spread}^2)` and a Zipfian
    background :math:`b_v = -\log (v+1)`, the same for a given ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    story = NVDM(vocab_size, latent_dim)
    with torch.no_grad():
        story.decoder.weight.copy_(spread * torch.randn(vocab_size, latent_dim, generator=gen))
        story.decoder.bias.copy_(-torch.arange(1, vocab_size + 1).float().log())
    return story


def synthetic_nvdm_corpus(
    seed: int = 0,
    num_train: int = 2000,
    num_test: int = 500,
    vocab_size: int = 500,
    latent_dim: int = 5,
    mean_length: float = 80.0,
) -> tuple[dict[str, BagOfWords], NVDM]:
    """Documents sampled from :func:`random_nvdm`; lengths are ``5 + Poisson(mean_length - 5)``.

    :returns: ``({"train", "test"}, generator)``; the same ``seed`` gives the same corpus.
    """
    generator = random_nvdm(seed, vocab_size, latent_dim)
    vocab = Vocab([f"w{i:04d}" for i in range(vocab_size)])
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        lengths = 5 + torch.poisson(torch.full((num_train + num_test,), mean_length - 5.0)).long()
        counts = generator.generate(lengths)
    finally:
        torch.set_rng_state(state)
    splits = {
        "train": BagOfWords.from_dense(counts[:num_train], vocab, name="synthetic/train"),
        "test": BagOfWords.from_dense(counts[num_train:], vocab, name="synthetic/test"),
    }
    return splits, generator


def random_sentence_oracle(seed: int = 0, vocab_size: int = 1000, hidden_dim: int = 100, scale: float = 1.0):
    r"""The SA-VAE synthetic oracle (Kim et al. 2018): an LSTM sentence story with
    :math:`z = (z_1, z_2) \sim \mathcal N(0, I_2)` fed at every step, every weight drawn from
    :math:`U(-\mathrm{scale}, \mathrm{scale})` so that its word distributions are peaked."""
    from fabula.models.lstm_vae import LSTMVAE

    gen = torch.Generator().manual_seed(seed)
    oracle = LSTMVAE(vocab_size, latent_dim=2, embed_dim=hidden_dim, hidden_dim=hidden_dim, z_every_step=True)
    with torch.no_grad():
        for p in oracle.decoder.parameters():
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * scale)
    return oracle


def synthetic_sentence_corpus(
    seed: int = 0,
    num_train: int = 5000,
    num_valid: int = 500,
    num_test: int = 500,
    vocab_size: int = 1000,
    max_length: int = 10,
):
    """Sentences sampled ancestrally from :func:`random_sentence_oracle`, at most ``max_length``
    words each (longer draws are cut), the same for a given ``seed``.

    :returns: ``({"train", "valid", "test"}, oracle)``.
    """
    from fabula.data.text import SPECIALS, TextCorpus, TextVocab
    from fabula.generation import sample

    oracle = random_sentence_oracle(seed, vocab_size)
    vocab = TextVocab([*SPECIALS, *(f"w{i:04d}" for i in range(len(SPECIALS), vocab_size))])
    sizes = {"train": num_train, "valid": num_valid, "test": num_test}
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        z = oracle.prior_sample(sum(sizes.values()))["z"]
        sentences = sample(oracle.decoder, z, max_length=max_length)
    finally:
        torch.set_rng_state(state)
    splits, start = {}, 0
    for name, n in sizes.items():
        splits[name] = TextCorpus(sentences[start : start + n], vocab, name=f"synthetic/{name}")
        start += n
    return splits, oracle
