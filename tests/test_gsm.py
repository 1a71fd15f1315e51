"""The Gaussian Softmax Model: its likelihood against a hand computation token by token, its
simplices, draws on a leading particle dimension, training, and the command line."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from test_lda import synthetic_corpus

from fabula.cli import main
from fabula.data import BagOfWords, Vocab
from fabula.evaluation import evaluate
from fabula.guides import NormalGuide
from fabula.inference import Setup, build
from fabula.models import GSM
from fabula.models.capabilities import GeneratesDocuments, HasTopics

DOCUMENTS = [[0, 3, 3, 1, 0], [2, 2]]  # word ids of each document's tokens


def tiny_story() -> GSM:
    """K = 2 topics over V = 4 words from an H = 2 Gaussian, with fixed weights."""
    story = GSM(4, num_topics=2, latent_dim=2, embed_dim=3)
    with torch.no_grad():
        story.mixing.weight.copy_(torch.tensor([[1.0, -0.5], [0.3, 2.0]]))
        story.mixing.bias.copy_(torch.tensor([0.2, -0.1]))
        story.topic_vectors.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]))
        story.word_vectors.copy_(
            torch.tensor([[1.0, 0.2, 0.0], [-1.0, 0.5, 1.0], [0.0, -1.0, 2.0], [0.3, 0.3, 0.3]])
        )
        story.word_bias.copy_(torch.tensor([0.1, -0.2, 0.0, 0.4]))
    return story


def batch_of(documents, vocab=4):
    counts = torch.stack([torch.bincount(torch.tensor(d), minlength=vocab).float() for d in documents])
    corpus = BagOfWords.from_dense(counts, Vocab([f"w{i}" for i in range(vocab)]))
    return corpus.batch(torch.arange(len(documents)))


def softmax(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def hand_log_likelihood(story: GSM, z: list[float], tokens: list[int]) -> float:
    """sum over tokens of log sum_k theta_k beta_{k,w}, with explicit softmaxes."""
    W, c = story.mixing.weight.tolist(), story.mixing.bias.tolist()
    t, v, b = story.topic_vectors.tolist(), story.word_vectors.tolist(), story.word_bias.tolist()
    theta = softmax([sum(W[k][h] * z[h] for h in range(len(z))) + c[k] for k in range(len(W))])
    beta = [
        softmax([sum(t[k][e] * v[w][e] for e in range(len(t[k]))) + b[w] for w in range(len(v))])
        for k in range(len(t))
    ]
    total = 0.0
    for w in tokens:
        total += math.log(sum(theta[k] * beta[k][w] for k in range(len(theta))))
    return total


def log_likelihood(story: GSM, batch, z: torch.Tensor) -> torch.Tensor:
    """The story's log p(x | z) of each document, read from its trace."""
    with torch.no_grad():
        trace = poutine.trace(poutine.condition(story.model, {"z": z})).get_trace(batch)
        return trace.nodes["x"]["fn"].log_prob(trace.nodes["x"]["value"])


def test_likelihood_equals_a_hand_computation_token_by_token():
    story, batch = tiny_story(), batch_of(DOCUMENTS)
    z = torch.tensor([[0.4, -1.2], [1.5, 0.3]])
    ours = log_likelihood(story, batch, z)
    for d, tokens in enumerate(DOCUMENTS):
        assert float(ours[d]) == pytest.approx(hand_log_likelihood(story, z[d].tolist(), tokens), rel=1e-5)


def test_proportions_and_topics_are_distributions():
    story = GSM(7, num_topics=3, latent_dim=2, embed_dim=4)
    theta = story.proportions(torch.randn(5, 2))
    torch.testing.assert_close(theta.sum(-1), torch.ones(5))
    beta = story.topic_word()
    assert beta.shape == (3, 7) and bool((beta > 0).all())
    torch.testing.assert_close(beta.sum(-1), torch.ones(3))


def test_draws_on_a_leading_particle_dimension_broadcast():
    story, batch = tiny_story(), batch_of(DOCUMENTS)
    with torch.no_grad(), pyro.plate("particles", 3, dim=-2):
        trace = poutine.trace(story.model).get_trace(batch)
        ours = trace.nodes["x"]["fn"].log_prob(trace.nodes["x"]["value"])
    z = trace.nodes["z"]["value"]
    assert z.shape == (3, 2, 2)
    assert ours.shape == (3, 2)
    for s in range(3):
        torch.testing.assert_close(ours[s], log_likelihood(story, batch, z[s]))
    inference = build("vae", Setup(story, NormalGuide(4, 2, hidden=[4])))
    corpus = BagOfWords.from_dense(batch.counts, Vocab([f"w{i}" for i in range(4)]))
    assert torch.isfinite(evaluate(inference, corpus, "iw:5").nll).all()


def test_generates_documents_and_names_topics():
    story = tiny_story()
    assert isinstance(story, GeneratesDocuments) and isinstance(story, HasTopics)
    counts = story.generate(torch.tensor([5, 0, 9]))
    assert counts.shape == (3, 4) and counts.sum(-1).tolist() == [5.0, 0.0, 9.0]
    assert story.topic_words(2).shape == (2, 2)
    assert [len(row) for row in story.topics(["a", "b", "c", "d"], 3)] == [3, 3]


def test_vae_training_lowers_the_test_nll():
    torch.manual_seed(0)
    train, _ = synthetic_corpus(seed=0)
    test, _ = synthetic_corpus(seed=1, docs=50)
    story = GSM(6, num_topics=2, latent_dim=2, embed_dim=4)
    story.init_background(train)
    inference = build("vae", Setup(story, NormalGuide(6, 2, hidden=[8])))
    before = float(evaluate(inference, test, "elbo:20").nll.mean())
    inference.fit(train, 3, 16, progress=False)
    after = float(evaluate(inference, test, "elbo:20").nll.mean())
    assert after < before


def test_trains_shows_topics_and_evaluates_from_the_command_line(tmp_path, capsys):
    run = str(tmp_path / "run")
    flags = ["--num-topics", "3", "--latent-dim", "2", "--embed-dim", "4", "--hidden", "8"]
    assert main(["train", "gsm", "--out", run, "--epochs", "1", "--no-reference", "--quiet", *flags]) == 0
    capsys.readouterr()
    assert main(["topics", run, "--k", "3"]) == 0
    *rows, summary = capsys.readouterr().out.strip().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["z[0]", "z[1]", "z[2]"]
    assert summary.startswith("mean NPMI")
    assert main(["evaluate", run, "--estimator", "iw:10"]) == 0
    assert "estimator iw:10" in capsys.readouterr().out
