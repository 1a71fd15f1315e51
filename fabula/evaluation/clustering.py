r"""Homogeneity, completeness and V-measure of a clustering against class labels.

With classes :math:`C` (the labels), clusters :math:`K` and the contingency counts
:math:`n_{ck}` of :math:`N` items (marginals :math:`n_c`, :math:`n_k`),

.. math::

    H(C) = -\sum_c \frac{n_c}{N} \log \frac{n_c}{N}, \qquad
    H(C \mid K) = -\sum_{c,k} \frac{n_{ck}}{N} \log \frac{n_{ck}}{n_k},

homogeneity is :math:`h = 1 - H(C \mid K) / H(C)` (:math:`h = 1` when :math:`H(C) = 0`),
completeness is :math:`c = 1 - H(K \mid C) / H(K)` (:math:`c = 1` when :math:`H(K) = 0`) and the
V-measure is their harmonic mean :math:`v = 2hc / (h + c)` (0 when :math:`h + c = 0`). Natural logs
are used; the ratios do not depend on the base.

Homogeneity grows with the number of clusters even when they ignore the classes (one item per
cluster gives 1), so :func:`chance_homogeneity` gives the level to read a figure against: the
mean homogeneity of the same clusters shuffled against the labels.

References: A. Rosenberg, J. Hirschberg. V-Measure: A Conditional Entropy-Based External Cluster
Evaluation Measure. EMNLP-CoNLL 2007.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chance_homogeneity", "completeness", "homogeneity", "v_measure"]


def _as_array(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _contingency(labels, clusters) -> np.ndarray:
    """Counts ``[num_classes, num_clusters]`` of items per (label, cluster) pair, as float64."""
    labels, clusters = _as_array(labels, "labels"), _as_array(clusters, "clusters")
    if labels.shape[0] != clusters.shape[0]:
        raise ValueError(
            f"labels and clusters have different lengths ({labels.shape[0]} vs {clusters.shape[0]})"
        )
    if labels.shape[0] == 0:
        raise ValueError("labels and clusters are empty")
    _, c = np.unique(labels, return_inverse=True)
    _, k = np.unique(clusters, return_inverse=True)
    num_k = int(k.max()) + 1
    counts = np.bincount(c * num_k + k, minlength=(int(c.max()) + 1) * num_k)
    return counts.reshape(-1, num_k).astype(np.float64)


def _conditional_ratio(counts: np.ndarray) -> float:
    r""":math:`1 - H(A \mid B) / H(A)` for counts ``[A, B]``, 1 when :math:`H(A) = 0`."""
    total = counts.sum()
    n_a = counts.sum(1)
    n_a = n_a[n_a > 0]
    h_a = -float(np.sum(n_a / total * np.log(n_a / total)))
    if h_a == 0.0:
        return 1.0
    n_b = np.broadcast_to(counts.sum(0, keepdims=True), counts.shape)
    nonzero = counts > 0
    n_ab, n_b = counts[nonzero], n_b[nonzero]
    h_a_given_b = -float(np.sum(n_ab / total * np.log(n_ab / n_b)))
    return 1.0 - h_a_given_b / h_a


def homogeneity(labels, clusters) -> float:
    r""":math:`h = 1 - H(C \mid K) / H(C)`: 1 when every cluster holds a single class."""
    return _conditional_ratio(_contingency(labels, clusters))


def chance_homogeneity(labels, clusters, shuffles: int = 20, seed: int = 0) -> float:
    """The mean :func:`homogeneity` of ``clusters`` randomly permuted against ``labels`` ``shuffles``
    times: the homogeneity that clusters of these sizes reach by chance."""
    labels, clusters = _as_array(labels, "labels"), _as_array(clusters, "clusters")
    if shuffles < 1:
        raise ValueError(f"shuffles must be >= 1, got {shuffles}")
    rng = np.random.default_rng(seed)
    return float(np.mean([homogeneity(labels, rng.permutation(clusters)) for _ in range(shuffles)]))


def completeness(labels, clusters) -> float:
    r""":math:`c = 1 - H(K \mid C) / H(K)`: 1 when every class lies in a single cluster."""
    return _conditional_ratio(_contingency(labels, clusters).T)


def v_measure(labels, clusters) -> float:
    """The harmonic mean of :func:`homogeneity` and :func:`completeness`."""
    counts = _contingency(labels, clusters)
    h, c = _conditional_ratio(counts), _conditional_ratio(counts.T)
    return 0.0 if h + c == 0.0 else 2.0 * h * c / (h + c)
