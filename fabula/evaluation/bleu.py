r"""Corpus BLEU (Papineni et al. 2002) and BLEU of samples against a test set.

For hypotheses :math:`h_i` with references :math:`R_i`, the modified (clipped) n-gram precision is
summed over the corpus,

.. math::

    p_n = \frac{\sum_i \sum_{g \in \mathrm{ngrams}_n(h_i)} \min\big(\#_{h_i}(g),
          \max_{r \in R_i} \#_r(g)\big)}{\sum_i \max(|h_i| - n + 1, 0)},

and BLEU is :math:`\mathrm{BP} \cdot \exp\big(\frac1N \sum_{n=1}^N \log p_n\big)` (uniform weights),
reported in :math:`[0, 100]`. The brevity penalty is :math:`\mathrm{BP} = 1` if :math:`c > r` and
:math:`\exp(1 - r / c)` otherwise, with :math:`c = \sum_i |h_i|` and :math:`r = \sum_i |r_i^*|`,
:math:`r_i^*` the reference whose length is closest to :math:`|h_i|` (ties: the shorter). Without
smoothing any :math:`p_n = 0` gives BLEU 0; with ``smooth=True`` the precisions for :math:`n > 1`
become :math:`(\text{matches} + 1) / (\text{total} + 1)` (Lin & Och 2004, "smoothing 2").

:func:`sample_bleu` scores generated sentences with every test sentence as a reference for every
sample. :func:`reconstruction_bleu` scores the greedy decode of each sentence's posterior mean
against that sentence alone: the BLEU that Shi et al.'s (2020) released code reports on the test set.

References:

* K. Papineni, S. Roukos, T. Ward, W.-J. Zhu. BLEU: a Method for Automatic Evaluation of Machine
  Translation. ACL 2002.
* C.-Y. Lin, F. J. Och. ORANGE: a Method for Evaluating Automatic Evaluation Metrics for Machine
  Translation. COLING 2004.
* W. Shi, H. Zhou, N. Miao, L. Li. Dispersed Exponential Family Mixture VAEs for Interpretable Text
  Generation. ICML 2020.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import torch

from fabula.generation import greedy

__all__ = ["corpus_bleu", "reconstruction_bleu", "sample_bleu"]


def _ngrams(tokens: Sequence[Hashable], n: int) -> Counter:
    """Counts of the ``n``-grams (as tuples) of ``tokens``."""
    tokens = tuple(tokens)
    return Counter(tokens[i : i + n] for i in range(len(tokens) - n + 1))


def _max_counts(references: Sequence[Sequence[Hashable]], max_n: int) -> dict[tuple, int]:
    """The largest count of each n-gram (``n <= max_n``) in any single reference."""
    max_counts: dict[tuple, int] = {}
    for ref in references:
        for n in range(1, max_n + 1):
            for g, k in _ngrams(ref, n).items():
                if k > max_counts.get(g, 0):
                    max_counts[g] = k
    return max_counts


def _check_max_n(max_n: int) -> None:
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n}")


def _closest_length(hyp_len: int, sorted_lengths: Sequence[int]) -> int:
    """The length in ``sorted_lengths`` (ascending, non-empty) closest to ``hyp_len``; ties: the shorter."""
    j = bisect_left(sorted_lengths, hyp_len)
    if j == len(sorted_lengths):
        return sorted_lengths[-1]
    if j == 0 or sorted_lengths[j] == hyp_len:
        return sorted_lengths[j]
    below, above = sorted_lengths[j - 1], sorted_lengths[j]
    return below if hyp_len - below <= above - hyp_len else above


class _Stats:
    """Corpus sums of clipped matches and n-gram totals per order, and the lengths ``c`` and ``r``."""

    def __init__(self, max_n: int):
        self.max_n = max_n
        self.matches = [0] * max_n
        self.totals = [0] * max_n
        self.hyp_length = 0
        self.ref_length = 0

    def add(self, hypothesis: Sequence[Hashable], max_counts: Mapping[tuple, int], ref_length: int) -> None:
        """Add one hypothesis, clipping each n-gram's count at ``max_counts`` (keyed by n-gram tuple)."""
        for n in range(1, self.max_n + 1):
            counts = _ngrams(hypothesis, n)
            self.matches[n - 1] += sum(min(k, max_counts.get(g, 0)) for g, k in counts.items())
            self.totals[n - 1] += max(len(hypothesis) - n + 1, 0)
        self.hyp_length += len(hypothesis)
        self.ref_length += ref_length

    def bleu(self, smooth: bool) -> float:
        if self.hyp_length == 0:
            return 0.0
        log_precision = 0.0
        for n in range(1, self.max_n + 1):
            matches, total = self.matches[n - 1], self.totals[n - 1]
            if smooth and n > 1:
                matches, total = matches + 1, total + 1
            if matches == 0:
                return 0.0
            log_precision += math.log(matches / total) / self.max_n
        c, r = self.hyp_length, self.ref_length
        log_bp = 0.0 if c > r else 1.0 - r / c
        return 100.0 * math.exp(log_bp + log_precision)


def corpus_bleu(
    hypotheses: Sequence[Sequence[Hashable]],
    references: Sequence[Sequence[Sequence[Hashable]]],
    max_n: int = 4,
    smooth: bool = False,
) -> float:
    """Corpus BLEU in ``[0, 100]`` of token lists ``hypotheses`` against ``references``.

    :param hypotheses: one token list per hypothesis.
    :param references: for each hypothesis, a non-empty list of reference token lists.
    :param max_n: the highest n-gram order (uniform weights ``1 / max_n``).
    :param smooth: add one to the matches and totals of the orders ``n > 1``.
    """
    _check_max_n(max_n)
    if len(hypotheses) == 0:
        raise ValueError("hypotheses is empty: BLEU needs at least one hypothesis")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references have different lengths "
            f"({len(hypotheses)} hypotheses, {len(references)} reference lists)"
        )
    stats = _Stats(max_n)
    for i, (hypothesis, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if len(refs) == 0:
            raise ValueError(f"hypothesis {i} has no references")
        max_counts = _max_counts(refs, max_n)
        ref_length = _closest_length(len(hypothesis), sorted(len(ref) for ref in refs))
        stats.add(hypothesis, max_counts, ref_length)
    return stats.bleu(smooth)


def sample_bleu(
    samples: Sequence[Sequence[Hashable]],
    test_sentences: Sequence[Sequence[Hashable]],
    max_n: int = 4,
    smooth: bool = False,
) -> float:
    """BLEU in ``[0, 100]`` of generated ``samples`` with every test sentence as a reference of each.

    Equal to :func:`corpus_bleu` with ``references = [test_sentences] * len(samples)``, but the
    maximum count of each n-gram in any single test sentence and the sorted test lengths are
    computed once, so the cost is linear in the sizes of the samples and of the test set.
    """
    _check_max_n(max_n)
    if len(samples) == 0:
        raise ValueError("samples is empty: BLEU needs at least one hypothesis")
    if len(test_sentences) == 0:
        raise ValueError("test_sentences is empty: BLEU needs at least one reference")
    max_counts = _max_counts(test_sentences, max_n)
    lengths = sorted(len(sentence) for sentence in test_sentences)
    stats = _Stats(max_n)
    for sample in samples:
        stats.add(sample, max_counts, _closest_length(len(sample), lengths))
    return stats.bleu(smooth)


def reconstruction_bleu(
    decoder, codes: torch.Tensor, sentences, max_length: int = 50, batch_size: int = 512
) -> float:
    r"""Corpus BLEU of :math:`\mathrm{greedy}(E_q[z \mid x_i])` against :math:`x_i` alone, for each
    sentence :math:`x_i` of ``sentences`` (token-id lists) and its row of ``codes`` (``[N, D]``, e.g.
    :attr:`~fabula.evaluation.Evaluation.posterior_means`). High when the code carries the sentence; a collapsed
    posterior decodes every sentence alike."""
    if codes.shape[0] != len(sentences):
        raise ValueError(f"{codes.shape[0]} codes for {len(sentences)} sentences: one code per sentence")
    hypotheses = []
    for chunk in codes.split(batch_size):
        hypotheses += greedy(decoder, chunk, max_length=max_length)
    return corpus_bleu(hypotheses, [[sentence] for sentence in sentences])
