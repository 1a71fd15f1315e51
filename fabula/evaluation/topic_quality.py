r"""The quality of a topic story's topics from their top words: NPMI coherence against a
reference corpus and topic diversity.

References:

- G. Bouma. Normalized (Pointwise) Mutual Information in Collocation Extraction. GSCL 2009.
- J. H. Lau, D. Newman, T. Baldwin. Machine Reading Tea Leaves: Automatically Evaluating Topic
  Coherence and Topic Model Quality. EACL 2014.
- A. Srivastava, C. Sutton. Autoencoding Variational Inference for Topic Models. ICLR 2017.
- A. B. Dieng, F. J. R. Ruiz, D. M. Blei. Topic Modeling in Embedding Spaces. TACL 2020.
"""

from __future__ import annotations

import torch

#: The top words per topic that topic diversity counts (Dieng et al. 2020).
DIVERSITY_TOP = 25

_CHUNK = 4096  # documents per co-occurrence product: bounds memory at [chunk, K, top] floats


def _top(topics_ids, top: int, least: int = 1) -> torch.Tensor:
    """The first ``top`` ids of each row of ``topics_ids``, ``[K, top]`` on the CPU."""
    ids = torch.as_tensor(topics_ids).cpu().long()
    if ids.dim() != 2 or ids.shape[1] < top or top < least:
        raise ValueError(
            f"expected {max(top, least)} or more word ids per topic ([K, k] with k >= top >= {least}), "
            f"got shape {list(ids.shape)} and top {top}"
        )
    return ids[:, :top]


def npmi(topics_ids, corpus, top: int = 10) -> torch.Tensor:
    r"""NPMI coherence of each topic's top ``top`` words, from document co-occurrence in the
    reference ``corpus`` (a :class:`~fabula.data.BagOfWords`) of :math:`N` documents.

    With :math:`D(w)` the documents containing word :math:`w` and :math:`D(w_i, w_j)` those
    containing both, :math:`P(w) = D(w) / N`, :math:`P(w_i, w_j) = D(w_i, w_j) / N` and

    .. math::
        \mathrm{NPMI}(w_i, w_j) = \frac{\log \frac{P(w_i, w_j)}{P(w_i) P(w_j)}}{-\log P(w_i, w_j)}
        \in [-1, 1],

    a topic's coherence is the mean over the pairs :math:`i < j` of its top words. A pair
    that never shares a document scores :math:`-1` (the limit :math:`P(w_i, w_j) \to 0`); a pair
    in every document (:math:`P(w_i, w_j) = 1`, where the ratio is :math:`0/0`) scores :math:`1`,
    the value of a pair that always occurs together at any :math:`P(w_i, w_j) < 1`. Counts are
    binary per document (Lau et al. 2014; as reported by Srivastava & Sutton 2017 and Dieng et
    al. 2020).

    :param topics_ids: ``[K, k]`` word ids, each row ranked most weighted first
        (:meth:`~fabula.models.capabilities.HasTopics.topic_words`), :math:`k \ge` ``top``.
    :param corpus: the reference documents, with the story's vocabulary.
    :param top: words per topic scored, at least 2.
    :returns: ``[K]`` float64, each topic's NPMI.
    """
    ids = _top(topics_ids, top, least=2)
    if int(ids.max()) >= len(corpus.vocab) or int(ids.min()) < 0:
        raise ValueError(f"word ids outside the reference corpus's vocabulary of {len(corpus.vocab)}")
    N = len(corpus)
    if N == 0:
        raise ValueError("the reference corpus has no documents")
    words, inverse = ids.unique(return_inverse=True)  # the top-word union, [U]; ids = words[inverse]
    column = torch.full((len(corpus.vocab),), -1, dtype=torch.long)
    column[words] = torch.arange(len(words))
    co = torch.zeros(ids.shape[0], top, top, dtype=torch.float64)  # D(w_i, w_j); D(w_i) on the diagonal
    for start in range(0, N, _CHUNK):
        stop = min(start + _CHUNK, N)
        lo, hi = int(corpus.indptr[start]), int(corpus.indptr[stop])
        doc = torch.repeat_interleave(torch.arange(stop - start), corpus.indptr[start : stop + 1].diff())
        col = column[corpus.ids[lo:hi]]
        kept = (col >= 0) & (corpus.counts[lo:hi] > 0)
        incidence = torch.zeros(stop - start, len(words))
        incidence[doc[kept], col[kept]] = 1.0
        x = incidence[:, inverse].permute(1, 2, 0)  # [K, top, chunk]
        co += (x @ x.transpose(1, 2)).double()
    p = co.diagonal(dim1=1, dim2=2) / N  # [K, top]
    joint = co / N
    scores = (joint.log() - p[:, :, None].log() - p[:, None, :].log()) / -joint.log()
    scores = torch.where(joint == 0, -1.0, torch.where(joint == 1, 1.0, scores))
    i, j = torch.triu_indices(top, top, offset=1)
    return scores[:, i, j].mean(-1)


def topic_diversity(topics_ids, top: int = DIVERSITY_TOP) -> float:
    r"""The share of unique words among all :math:`K` topics' top ``top`` words,
    :math:`|\bigcup_k \mathrm{top}(k)| / (K \cdot top) \in (0, 1]`: 1 when no two topics share a
    top word, :math:`1/K` when all topics have the same top words (Dieng et al. 2020).

    :param topics_ids: ``[K, k]`` word ids, each row ranked most weighted first,
        :math:`k \ge` ``top``.
    """
    ids = _top(topics_ids, top)
    return ids.unique().numel() / ids.numel()
