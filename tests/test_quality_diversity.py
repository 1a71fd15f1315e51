"""The quality-diversity measures of Caccia et al. (2020): Self-BLEU against leave-one-out corpus
BLEU and a hand computation, the LM score against log_prob, and the (reverse) LM score's models."""

import math
import random

import pytest
import torch

from fabula.data.text import SPECIALS, TextBatch, TextVocab
from fabula.errors import DivergenceError
from fabula.evaluation.bleu import corpus_bleu
from fabula.evaluation.quality_diversity import lm_score, reverse_lm_score, self_bleu, train_language_model
from fabula.models import RNNLM


def toks(sentence: str) -> list[str]:
    return sentence.split()


def leave_one_out(samples):
    return [samples[:i] + samples[i + 1 :] for i in range(len(samples))]


# ---------------------------------------------------------------- Self-BLEU


@pytest.mark.parametrize("seed", range(8))
def test_self_bleu_equals_corpus_bleu_with_the_other_samples_as_references(seed):
    rng = random.Random(seed)
    words = "abc" if seed % 2 else "abcdef"  # few words: many shared n-grams and repeats
    samples = [
        [rng.choice(words) for _ in range(rng.randint(0, 7))]  # empty samples too
        for _ in range(rng.randint(3, 12))
    ]
    scores = []
    for max_n in (1, 2, 3, 4):
        for smooth in (False, True):
            expected = corpus_bleu(samples, leave_one_out(samples), max_n=max_n, smooth=smooth)
            got = self_bleu(samples, max_n=max_n, smooth=smooth)
            assert got == pytest.approx(expected, rel=0, abs=1e-12), (max_n, smooth)
            scores.append(got)
    assert any(0.0 < s < 100.0 for s in scores)  # the comparison saw more than the extremes


def test_self_bleu_reference_lengths_leave_the_own_length_out():
    # The lengths where the closest other length differs from the closest length overall: a unique
    # length with neighbours on both sides (a tie between them: the shorter), the shortest, the
    # longest, and a length two samples share.
    for lengths in ([1, 3, 5], [2, 3, 7], [1, 5, 6], [4, 4, 9], [0, 8], [3, 3], [2, 6, 6, 6, 10]):
        samples = [["a"] * n for n in lengths]
        for smooth in (False, True):
            expected = corpus_bleu(samples, leave_one_out(samples), max_n=1, smooth=smooth)
            assert self_bleu(samples, max_n=1, smooth=smooth) == pytest.approx(expected, rel=0, abs=1e-12)


def test_self_bleu_worked_example():
    # max_n = 2; s1 = "a a b", s2 = "a b", s3 = "a a a", each against the other two.
    # s1 vs {s2, s3}: a occurs 2 times, at most 3 (s3) in another -> 2; b 1 (s2) -> 1: unigrams 3/3.
    #   bigrams aa (s3 has 2) -> 1, ab (s2) -> 1: 2/2.
    # s2 vs {s1, s3}: a -> 1, b (s1) -> 1: 2/2; ab (s1) -> 1: 1/1.
    # s3 vs {s1, s2}: a occurs 3 times, at most 2 (s1) in another -> 2: 2/3 (3/3 if s3 counted
    #   itself); aa occurs 2 times, once in s1 -> 1: 1/2.
    # p1 = (3 + 2 + 2) / (3 + 2 + 3) = 7/8, p2 = (2 + 1 + 1) / (2 + 1 + 2) = 4/5.
    # Closest other lengths: s1 (3) among {2, 3} -> 3; s2 (2) among {3, 3} -> 3; s3 (3) among {3, 2}
    #   -> 3. c = 8 <= r = 9 -> BP = exp(1 - 9/8) = exp(-1/8).
    # BLEU = 100 * exp(-1/8) * sqrt(7/8 * 4/5) = 100 * exp(-1/8) * sqrt(7/10)  (about 73.83).
    # Smoothed: p2 = (4 + 1) / (5 + 1) = 5/6 -> 100 * exp(-1/8) * sqrt(7/8 * 5/6) = ... sqrt(35/48).
    samples = [toks("a a b"), toks("a b"), toks("a a a")]
    assert self_bleu(samples, max_n=2) == pytest.approx(100 * math.exp(-1 / 8) * math.sqrt(7 / 10), abs=1e-9)
    assert self_bleu(samples, max_n=2, smooth=True) == pytest.approx(
        100 * math.exp(-1 / 8) * math.sqrt(35 / 48), abs=1e-9
    )


def test_self_bleu_identical_samples_score_100():
    # Each sample has a copy among the others: every n-gram matches and r = c.
    samples = [toks("the cat sat on the mat")] * 3
    assert self_bleu(samples) == pytest.approx(100.0, abs=1e-9)
    assert self_bleu(samples, smooth=True) == pytest.approx(100.0, abs=1e-9)


def test_self_bleu_never_matches_a_sample_with_itself():
    # No word in common: each sample's only reference is the other, so nothing matches (each
    # sample scored against itself as well would give 100).
    samples = [toks("a b c"), toks("x y z")]
    for max_n in (1, 2, 3):
        assert self_bleu(samples, max_n=max_n) == 0.0
        assert self_bleu(samples, max_n=max_n, smooth=True) == 0.0
        assert corpus_bleu(samples, [samples, samples], max_n=max_n) == pytest.approx(100.0, abs=1e-9)
    # One repeated sample among distinct ones: only the repeated pair matches.
    assert self_bleu([toks("a b"), toks("a b"), toks("x y")], max_n=2) > 0.0


def test_self_bleu_refusals():
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        self_bleu([toks("a b c")])
    with pytest.raises(ValueError, match="at least 2 samples, got 0"):
        self_bleu([])
    with pytest.raises(ValueError, match="max_n must be at least 1"):
        self_bleu([toks("a"), toks("b")], max_n=0)


# ---------------------------------------------------------------- LM scores


def word_vocab(num_words: int) -> TextVocab:
    return TextVocab([*SPECIALS, *(f"w{i}" for i in range(num_words))])


def random_sentences(rng: random.Random, vocab: TextVocab, num: int, max_length: int = 6) -> list[list[int]]:
    return [
        [rng.randrange(len(SPECIALS), len(vocab)) for _ in range(rng.randint(1, max_length))]
        for _ in range(num)
    ]


def test_lm_score_is_the_nll_per_token_of_log_prob():
    torch.manual_seed(0)
    vocab = word_vocab(8)
    scorer = RNNLM(len(vocab), 6, 7).eval()
    sentences = [*random_sentences(random.Random(0), vocab, 9), []]  # an empty one: <eos> alone
    batch = TextBatch.from_ids(sentences)
    with torch.no_grad():
        expected = -scorer.log_prob(batch).sum().item() / batch.lengths.sum().item()
    assert batch.lengths.sum().item() == sum(len(s) for s in sentences) + len(sentences)
    for batch_size in (3, 256):  # over several batches and in one
        assert lm_score(scorer, sentences, batch_size=batch_size) == pytest.approx(expected, rel=1e-6)


class _ImpossibleScorer:
    """A scorer giving every sentence probability 0."""

    device = torch.device("cpu")

    def log_prob(self, batch):
        return torch.full((batch.size,), float("-inf"))

    def num_tokens(self, batch):
        return batch.lengths


def test_lm_score_refuses_a_non_finite_nll_and_no_samples():
    with pytest.raises(DivergenceError, match="not a finite number"):
        lm_score(_ImpossibleScorer(), [[4, 5]])
    with pytest.raises(ValueError, match="samples is empty"):
        lm_score(_ImpossibleScorer(), [])


TINY = {"embed_dim": 8, "hidden_dim": 12, "batch_size": 8, "lr": 1e-2}


def test_train_language_model_fits_and_is_reproducible():
    vocab = word_vocab(10)
    sentences = random_sentences(random.Random(1), vocab, 24)
    start = train_language_model(sentences, vocab, epochs=0, **TINY)  # the seed's untrained model
    model = train_language_model(sentences, vocab, epochs=5, **TINY)
    again = train_language_model(sentences, vocab, epochs=5, **TINY)
    assert not model.training
    assert lm_score(model, sentences) < lm_score(start, sentences) - 0.1
    assert model.state_dict().keys() == again.state_dict().keys()
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, again.state_dict()[name]), name
    other = train_language_model(sentences, vocab, epochs=5, seed=1, **TINY)
    assert not torch.equal(model.decoder.embed.weight, other.decoder.embed.weight)
    with pytest.raises(ValueError, match="sentences is empty"):
        train_language_model([], vocab)


def test_reverse_lm_score_rewards_samples_that_cover_the_test_set():
    vocab = word_vocab(20)
    # Test sentences of a few fixed patterns (ascending runs of words); unrelated samples uniform.
    test = [[4 + (start + k) % 20 for k in range(4)] for start in range(0, 20, 4)] * 4
    unrelated = random_sentences(random.Random(2), vocab, len(test))
    covering = reverse_lm_score(test, test, vocab, epochs=30, **TINY)
    uncovering = reverse_lm_score(unrelated, test, vocab, epochs=30, **TINY)
    assert math.isfinite(covering) and math.isfinite(uncovering)
    assert covering < uncovering - 0.5


def test_language_model_on_the_device(device):
    vocab = word_vocab(6)
    sentences = random_sentences(random.Random(3), vocab, 8)
    model = train_language_model(sentences, vocab, epochs=1, device=device, **TINY)
    assert model.device.type == device.type
    assert math.isfinite(lm_score(model, sentences))
