import pytest
import torch
from pyro import poutine

from fabula.data import synthetic_nvdm_corpus
from fabula.models import NVDM
from helpers import linear_gaussian_setup, nvdm_setup


def test_nvdm_trace_has_the_contract_sites_and_shapes():
    story, guide, corpus = nvdm_setup()
    batch = corpus["train"].batch(torch.arange(5))
    trace = poutine.trace(story.model).get_trace(batch)
    assert trace.nodes["z"]["value"].shape == (5, 4)
    assert trace.nodes["x"]["is_observed"]
    assert story.latent_sites == ("z",)
    trace.compute_log_prob()
    assert trace.nodes["x"]["log_prob"].shape == (5,)


def test_nvdm_refuses_a_batch_of_another_vocabulary():
    story, _, _ = nvdm_setup(vocab_size=40)
    corpus, _ = synthetic_nvdm_corpus(num_train=4, num_test=1, vocab_size=30, latent_dim=2)
    with pytest.raises(ValueError, match="expects 40"):
        story.model(corpus["train"].batch(torch.arange(2)))


def test_nvdm_generates_documents_of_the_given_lengths_and_topics():
    story = NVDM(12, 3)
    counts = story.generate(torch.tensor([5, 9, 1]))
    assert counts.sum(-1).tolist() == [5, 9, 1]
    with torch.no_grad():
        story.decoder.weight.zero_()
        story.decoder.weight[7, 1] = 3.0
        story.decoder.weight[2, 1] = 2.0
    words = [f"w{i}" for i in range(12)]
    topics = story.topics(words, k=2)
    assert len(topics) == 3 and topics[1] == ["w7", "w2"]
    with pytest.raises(ValueError, match="11 words"):
        story.topics(words[:-1])


def test_linear_gaussian_exact_marginal_and_posterior_agree_with_bayes_rule():
    story, _, data = linear_gaussian_setup(num_data=5)
    x = data.x
    z = torch.randn(5, story.latent_dim)
    batch = data.batch(torch.arange(5))
    trace = poutine.trace(poutine.condition(story.model, data={"z": z})).get_trace(batch)
    log_joint = trace.log_prob_sum(site_filter=lambda name, site: True)
    trace.compute_log_prob()
    per_datum = trace.nodes["z"]["log_prob"] + trace.nodes["x"]["log_prob"]
    assert torch.isclose(per_datum.sum(), log_joint)
    # log p(x, z) - log p(z | x) = log p(x) for every z
    implied = per_datum - story.posterior(x).log_prob(z)
    assert torch.allclose(implied, story.log_marginal(x), atol=1e-4)
