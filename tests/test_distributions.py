import itertools

import pytest
import torch
from torch.distributions import Categorical, Multinomial

from fabula.data.text import EOS, PAD
from fabula.distributions import AutoregressiveSequence, BagOfWordsMultinomial, MaskedSequenceCategorical
from fabula.inference.word_dropout import word_dropout
from fabula.nn import LSTMDecoder
from helpers import sentence_setup


def test_log_prob_is_that_of_the_token_sequence():
    logits = torch.randn(4, 6)
    counts = torch.tensor(
        [[1, 0, 2, 0, 0, 3], [0, 0, 0, 1, 0, 0], [5, 1, 1, 1, 1, 1], [0, 2, 0, 0, 2, 0]]
    ).float()
    d = BagOfWordsMultinomial(logits)
    # the tokens in any order, each a categorical draw
    tokens = [torch.arange(6).repeat_interleave(c.long()) for c in counts]
    want = torch.stack(
        [Categorical(logits=lg).log_prob(t).sum() for lg, t in zip(logits, tokens, strict=True)]
    )
    assert torch.allclose(d.log_prob(counts), want, atol=1e-5)
    # the count vector's multinomial probability adds the coefficient log N! - sum_v log x_v!
    coef = torch.lgamma(counts.sum(-1) + 1) - torch.lgamma(counts + 1).sum(-1)
    multinomial = torch.stack(
        [Multinomial(int(c.sum()), logits=lg).log_prob(c) for lg, c in zip(logits, counts, strict=True)]
    )
    assert torch.allclose(d.log_prob(counts) + coef, multinomial, atol=1e-5)


def test_log_prob_broadcasts_over_an_outer_sample_dimension():
    logits = torch.randn(3, 2, 5)
    counts = torch.tensor([[1.0, 0, 2, 0, 1], [0, 4, 0, 0, 0]])
    out = BagOfWordsMultinomial(logits).log_prob(counts)
    assert out.shape == (3, 2)
    assert torch.allclose(out[1], BagOfWordsMultinomial(logits[1]).log_prob(counts))


def test_sample_has_the_requested_lengths_and_frequencies():
    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.2])
    d = BagOfWordsMultinomial(probs.log().expand(2, 3), total_count=torch.tensor([20000, 7]))
    x = d.sample()
    assert x.sum(-1).tolist() == [20000, 7]
    # binomial standard error of each frequency at N = 20000 is below 0.0036; allow 4 of them
    assert torch.allclose(x[0] / 20000, probs, atol=4 * 0.0036)


def canonical_sequences(vocab_size, steps):
    """Every sequence of ``steps`` ids that is ``<pad>`` after its first ``<eos>``: ``[M, steps]``."""
    rows = []
    for seq in itertools.product(range(vocab_size), repeat=steps):
        end = seq.index(EOS) + 1 if EOS in seq else steps
        if all(t == PAD for t in seq[end:]):
            rows.append(seq)
    return torch.tensor(rows)


@pytest.mark.parametrize("dropped", [None, torch.tensor([False, True, False])], ids=["plain", "word-dropout"])
def test_autoregressive_sequences_have_probabilities_that_sum_to_one(dropped):
    torch.manual_seed(0)
    decoder = LSTMDecoder(5, 4, 6, latent_dim=2)  # <pad> <bos> <eos> <unk> and one word
    values = canonical_sequences(5, 3)
    code = torch.randn(2).expand(len(values), 2)
    with torch.no_grad():
        log_p = AutoregressiveSequence(decoder, code, 3, dropped=dropped).log_prob(values)
    assert log_p.shape == (len(values),)
    assert log_p.logsumexp(0).exp() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("dropped", [None, torch.tensor([False, True])], ids=["plain", "word-dropout"])
def test_autoregressive_draws_have_the_frequencies_of_their_log_prob(dropped):
    torch.manual_seed(0)
    decoder = LSTMDecoder(5, 4, 6, latent_dim=2)
    d = AutoregressiveSequence(decoder, torch.randn(1, 2), 2, dropped=dropped)
    n = 20000
    draws = d.sample((n,))
    assert draws.shape == (n, 1, 2)
    values = canonical_sequences(5, 2)
    with torch.no_grad():
        probs = d.log_prob(values[:, None]).exp()[:, 0]
    freq = (draws[:, 0, None, :] == values).all(-1).double().mean(0)
    assert freq.sum() == pytest.approx(1.0)  # every draw is canonical
    # within 4 binomial standard errors of each sequence's probability
    assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt() + 1e-3).all()


def test_sentence_likelihood_is_the_teacher_forced_score_of_the_batch():
    story, _, corpus = sentence_setup()
    batch = word_dropout(corpus["train"].batch(torch.arange(8)), 0.5)
    z = torch.randn(3, 8, story.latent_dim)
    with torch.no_grad():
        got = story.likelihood(batch, z).log_prob(batch.targets)
        logits = story.decoder(batch.decoder_inputs, z)
        want = MaskedSequenceCategorical(logits, batch.mask).log_prob(batch.targets)
    assert got.shape == (3, 8)
    assert torch.allclose(got, want, atol=1e-5)
