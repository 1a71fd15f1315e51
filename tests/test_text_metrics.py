"""BLEU and clustering metrics against values worked out by hand."""

import math
import random

import numpy as np
import pytest
import torch

from fabula.evaluation import (
    chance_homogeneity,
    completeness,
    corpus_bleu,
    homogeneity,
    reconstruction_bleu,
    sample_bleu,
    v_measure,
)


def toks(sentence: str) -> list[str]:
    return sentence.split()


# ---------------------------------------------------------------- BLEU


def test_identical_hypothesis_scores_100():
    sentence = toks("the cat sat on the mat")
    assert corpus_bleu([sentence], [[sentence]]) == pytest.approx(100.0, abs=1e-9)
    assert corpus_bleu([sentence], [[sentence]], smooth=True) == pytest.approx(100.0, abs=1e-9)
    assert sample_bleu([sentence], [sentence]) == pytest.approx(100.0, abs=1e-9)


def test_worked_two_sentence_example():
    # max_n = 2.
    # h1 = "a b c e", refs {"a b d c"}: unigrams a, b, c match, e does not -> 3/4;
    #   bigrams ab, bc, ce vs ref bigrams ab, bd, dc -> 1/3.
    # h2 = "a a b", refs {"a b", "b a a b"}: max ref counts a: 2, b: 2 -> unigrams 3/3;
    #   bigrams aa, ab, both in "b a a b" -> 2/2.
    # Corpus: p1 = (3 + 3) / (4 + 3) = 6/7, p2 = (1 + 2) / (3 + 2) = 3/5.
    # c = 4 + 3 = 7; r = 4 + 2 (|h2| = 3 ties between 2 and 4: the shorter) = 6; c > r -> BP = 1.
    # BLEU = 100 * sqrt(6/7 * 3/5) = 100 * sqrt(18/35).
    hyps = [toks("a b c e"), toks("a a b")]
    refs = [[toks("a b d c")], [toks("a b"), toks("b a a b")]]
    assert corpus_bleu(hyps, refs, max_n=2) == pytest.approx(100 * math.sqrt(18 / 35), abs=1e-9)


def test_clipping_the_the_the():
    # Papineni et al. 2002: seven "the" against "the cat is on the mat" / "there is a cat on the mat";
    # "the" occurs at most twice in one reference -> clipped unigram precision 2/7.
    # c = 7, closest reference length 7 -> BP = exp(1 - 7/7) = 1, so BLEU-1 = 100 * 2/7.
    hyp = ["the"] * 7
    refs = [toks("the cat is on the mat"), toks("there is a cat on the mat")]
    assert corpus_bleu([hyp], [refs], max_n=1) == pytest.approx(200 / 7, abs=1e-9)
    # No bigram "the the" in any reference: p2 = 0 -> BLEU 0 without smoothing.
    assert corpus_bleu([hyp], [refs], max_n=2) == 0.0


def test_brevity_penalty_when_shorter():
    # h = "the cat sat on the mat" (c = 6); refs of lengths 7 and 8 -> r = 7.
    # Every 1..4-gram of h is in one of the references (the cat sat on | cat sat on the | sat on the mat)
    # -> all precisions 1, BLEU = 100 * exp(1 - 7/6) = 100 * exp(-1/6).
    hyp = toks("the cat sat on the mat")
    refs = [toks("the cat sat on the red mat"), toks("a cat sat on the mat today ok")]
    assert corpus_bleu([hyp], [refs]) == pytest.approx(100 * math.exp(-1 / 6), abs=1e-9)


def test_smoothing_of_higher_orders():
    # h = "a b c", ref "a c b", max_n = 3: p1 = 3/3, p2 = 0/2 (ab, bc vs ac, cb), p3 = 0/1.
    # Unsmoothed: 0. Smoothed: p2 = 1/3, p3 = 1/2; c = r = 3 -> BP = 1;
    # BLEU = 100 * (1 * 1/3 * 1/2) ** (1/3) = 100 * (1/6) ** (1/3).
    hyp, refs = toks("a b c"), [toks("a c b")]
    assert corpus_bleu([hyp], [refs], max_n=3) == 0.0
    assert corpus_bleu([hyp], [refs], max_n=3, smooth=True) == pytest.approx(
        100 * (1 / 6) ** (1 / 3), abs=1e-9
    )


def test_sample_bleu_equals_corpus_bleu_with_the_whole_test_set_as_references():
    rng = random.Random(0)
    vocab = "abcde"

    def sentence():
        return [rng.choice(vocab) for _ in range(rng.randint(1, 9))]

    samples = [sentence() for _ in range(7)]
    test = [sentence() for _ in range(6)]
    for max_n in (1, 2, 4):
        for smooth in (False, True):
            expected = corpus_bleu(samples, [test] * len(samples), max_n=max_n, smooth=smooth)
            assert sample_bleu(samples, test, max_n=max_n, smooth=smooth) == pytest.approx(expected, abs=1e-9)
    assert 0.0 < sample_bleu(samples, test, max_n=2) <= 100.0


def test_sample_bleu_brevity_penalty_uses_closest_test_length():
    # Test lengths 2 and 6; sample "a b c" (c = 3) is closer to 2 -> r = 2 < c -> BP = 1, and every
    # unigram and bigram of the sample occurs in "a b c d e f" -> BLEU-2 = 100.
    # Sample "a b c d" (c = 4) ties between 2 and 6 -> r = 2 -> BP = 1 again.
    test = [toks("x y"), toks("a b c d e f")]
    assert sample_bleu([toks("a b c")], test, max_n=2) == pytest.approx(100.0, abs=1e-9)
    assert sample_bleu([toks("a b c d")], test, max_n=2) == pytest.approx(100.0, abs=1e-9)
    # Sample "a b c d e" (c = 5) is closest to 6 -> BP = exp(1 - 6/5) = exp(-1/5).
    assert sample_bleu([toks("a b c d e")], test, max_n=2) == pytest.approx(100 * math.exp(-0.2), abs=1e-9)


def test_bleu_errors():
    with pytest.raises(ValueError, match="hypotheses is empty"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="different lengths"):
        corpus_bleu([toks("a b")], [[toks("a b")], [toks("c")]])
    with pytest.raises(ValueError, match="hypothesis 0 has no references"):
        corpus_bleu([toks("a b")], [[]])
    with pytest.raises(ValueError, match="max_n must be at least 1"):
        corpus_bleu([toks("a b")], [[toks("a b")]], max_n=0)
    with pytest.raises(ValueError, match="samples is empty"):
        sample_bleu([], [toks("a b")])
    with pytest.raises(ValueError, match="test_sentences is empty"):
        sample_bleu([toks("a b")], [])


class _Softmax(torch.nn.Module):
    """An output layer whose state is the logits themselves."""

    def log_probs(self, h):
        return torch.log_softmax(h, -1)


class _ReadingDecoder(torch.nn.Module):
    """A decoder whose code is the sentence: at step t it emits word ``z[:, t]`` with certainty."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = torch.nn.Embedding(vocab_size, 1)
        self.out = _Softmax()

    def start(self, z, n):
        return 0

    def step(self, tokens, t, z):
        logits = torch.full((z.shape[0], 1, self.vocab_size), -10.0)
        logits.scatter_(-1, z[:, t].long()[:, None, None], 10.0)
        return logits, t + 1


def test_reconstruction_bleu_scores_each_decode_against_its_own_sentence():
    sentences = [[4, 5, 6, 7], [8, 9, 4, 5, 6], [10, 11, 12]]
    eos = 2
    codes = torch.tensor([s + [eos] * (7 - len(s)) for s in sentences], dtype=torch.float)
    decoder = _ReadingDecoder(13)
    assert reconstruction_bleu(decoder, codes, sentences) == pytest.approx(100.0)
    # Codes one place off: sentence i is decoded as sentence i + 1 and scored against sentence i.
    shifted = reconstruction_bleu(decoder, codes.roll(1, 0), sentences)
    assert shifted == pytest.approx(corpus_bleu(sentences[-1:] + sentences[:-1], [[s] for s in sentences]))
    assert shifted < 50.0
    with pytest.raises(ValueError, match="2 codes for 3 sentences"):
        reconstruction_bleu(decoder, codes[:2], sentences)


# ---------------------------------------------------------------- clustering


def test_pure_clusters_are_homogeneous():
    labels = [0, 0, 1, 1, 2]
    clusters = [3, 4, 5, 5, 7]  # every cluster holds one class (but class 0 is split)
    assert homogeneity(labels, clusters) == 1.0
    assert completeness(labels, clusters) < 1.0
    # Identical partitions up to renaming: h = c = v = 1.
    assert v_measure(labels, [9, 9, 4, 4, 1]) == pytest.approx(1.0, abs=1e-12)


def test_uninformative_clusters_have_zero_homogeneity():
    labels = [0, 1, 1, 2, 0, 2]
    # One cluster: H(C | K) = H(C) -> h = 0; H(K) = 0 -> c = 1; v = 0.
    assert homogeneity(labels, [0] * 6) == 0.0
    assert completeness(labels, [0] * 6) == 1.0
    assert v_measure(labels, [0] * 6) == 0.0
    # Two clusters with the same class distribution {0, 1, 2} each: independent -> h = 0.
    assert homogeneity(labels, [0, 0, 1, 1, 1, 0]) == pytest.approx(0.0, abs=1e-12)
    # A single class: H(C) = 0 -> h = 1 by convention.
    assert homogeneity([5, 5, 5], [0, 1, 2]) == 1.0


def test_chance_homogeneity_is_the_level_of_clusters_that_ignore_the_labels():
    labels = [0, 1] * 500
    # Clusters equal to the classes: homogeneous, while shuffled they carry almost nothing.
    assert homogeneity(labels, labels) == 1.0
    assert chance_homogeneity(labels, labels) < 0.01
    # One item per cluster: homogeneous by construction, and just as homogeneous shuffled.
    assert chance_homogeneity(labels, list(range(1000))) == 1.0
    # Many small clusters inflate the figure: 250 clusters of 4 reach about a fifth by chance.
    assert 0.15 < chance_homogeneity(labels, [i // 4 for i in range(1000)]) < 0.3
    # A single cluster: 0 shuffled or not.
    assert chance_homogeneity(labels, [0] * 1000) == 0.0
    with pytest.raises(ValueError, match="shuffles must be >= 1"):
        chance_homogeneity(labels, labels, shuffles=0)


def test_hand_computed_intermediate_value():
    # labels C = [0, 0, 1, 1], clusters K = [0, 0, 0, 1].
    # H(C) = ln 2. Cluster 0 holds classes (0, 0, 1): H(C | K=0) = ln 3 - (2/3) ln 2; cluster 1 is pure.
    # H(C | K) = 3/4 (ln 3 - 2/3 ln 2) = 3/4 ln 3 - 1/2 ln 2  ->  h = 3/2 - 3/4 log2(3) ~ 0.3113.
    # H(K) = -(3/4 ln 3/4 + 1/4 ln 1/4) = 2 ln 2 - 3/4 ln 3. Class 0 lies in cluster 0; class 1 is split
    # evenly: H(K | C) = 1/2 ln 2  ->  c = 1 - (1/2 ln 2) / (2 ln 2 - 3/4 ln 3) ~ 0.3836.
    labels, clusters = [0, 0, 1, 1], [0, 0, 0, 1]
    h = 1.5 - 0.75 * math.log2(3)
    c = 1 - 0.5 * math.log(2) / (2 * math.log(2) - 0.75 * math.log(3))
    assert homogeneity(labels, clusters) == pytest.approx(h, abs=1e-12)
    assert completeness(labels, clusters) == pytest.approx(c, abs=1e-12)
    assert v_measure(labels, clusters) == pytest.approx(2 * h * c / (h + c), abs=1e-12)
    # Swapping the roles swaps homogeneity and completeness.
    assert homogeneity(clusters, labels) == pytest.approx(c, abs=1e-12)


def test_clustering_accepts_arrays_and_tensors():
    labels, clusters = [0, 0, 1, 1], [0, 0, 0, 1]
    expected = homogeneity(labels, clusters)
    assert homogeneity(np.array(labels), np.array(clusters)) == pytest.approx(expected, abs=1e-15)
    assert homogeneity(torch.tensor(labels), torch.tensor(clusters)) == pytest.approx(expected, abs=1e-15)


def test_clustering_errors():
    with pytest.raises(ValueError, match="different lengths"):
        homogeneity([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        completeness([], [])
    with pytest.raises(ValueError, match="must be 1-D"):
        v_measure([[0, 1]], [[0, 1]])
