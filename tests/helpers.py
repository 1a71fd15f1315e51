"""Small stories with data, shared by the tests."""

import torch

from fabula.data import Vectors, synthetic_nvdm_corpus
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.guides import EmptyGuide, NormalGuide, SentenceGuide
from fabula.models import LSTMVAE, NVDM, RNNLM, LinearGaussian


def orthogonal_linear_gaussian(data_dim=6, latent_dim=3, noise=0.5, seed=0):
    """A linear-Gaussian story whose W has orthogonal columns, so p(z|x) is diagonal."""
    gen = torch.Generator().manual_seed(seed)
    story = LinearGaussian(data_dim, latent_dim, noise_scale=noise)
    q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=gen))
    with torch.no_grad():
        story.weight.copy_(q * torch.tensor([2.0, 1.0, 0.5][:latent_dim]))
        story.bias.copy_(torch.randn(data_dim, generator=gen))
    return story


def linear_gaussian_setup(num_data=200, seed=0):
    story = orthogonal_linear_gaussian(seed=seed)
    torch.manual_seed(seed)
    data = Vectors(story.generate(num_data))
    guide = NormalGuide(story.data_dim, story.latent_dim, hidden=[])
    return story, guide, data


def nvdm_setup(vocab_size=40, latent_dim=4, num_train=64):
    corpus, generator = synthetic_nvdm_corpus(
        num_train=num_train, num_test=16, vocab_size=vocab_size, latent_dim=3, mean_length=30
    )
    story = NVDM(vocab_size, latent_dim)
    guide = NormalGuide(vocab_size, latent_dim, hidden=[16])
    return story, guide, corpus


def sentence_setup(latent=True, vocab_size=30):
    corpus, _ = synthetic_sentence_corpus(num_train=48, num_valid=16, num_test=16, vocab_size=vocab_size)
    if latent:
        return LSTMVAE(vocab_size, 4, 8, 12), SentenceGuide(vocab_size, 4, 8, 12), corpus
    return RNNLM(vocab_size, 8, 12), EmptyGuide(), corpus
