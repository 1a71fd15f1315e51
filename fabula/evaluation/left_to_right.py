r"""The left-to-right estimator of a topic model's held-out likelihood (Wallach et al. 2009).

For a story of LDA's form with topics :math:`\beta` and concentration :math:`\alpha` given, a
document's tokens :math:`w_1..w_N` in a fixed order have

.. math:: p(w) = \prod_{n=1}^N p(w_n \mid w_{<n}), \qquad
          p(w_n \mid w_{<n}) = E_{p(z_{<n} \mid w_{<n})} \Big[\sum_k \beta_{k w_n}
          \frac{n_k^{<n} + \alpha_k}{n - 1 + \sum_j \alpha_j}\Big],

and :func:`left_to_right` estimates it with :math:`R` particles, each drawing its topics left to
right, :math:`z_n \sim p(z_n \mid z_{<n}, w_n)`, and carrying the product of the incremental
probabilities :math:`\prod_n \sum_k \beta_{k w_n} (n_k^{<n} + \alpha_k) / (n - 1 + \sum_j
\alpha_j)`: sequential importance sampling with the locally optimal proposal, so
:math:`\hat p(w) = \frac1R \sum_r \prod_n (\cdot)` is unbiased and :math:`\log \hat p(w)` a
stochastic lower bound of :math:`\log p(w)`. Wallach et al.'s version also resamples the earlier
topics at each :math:`n`, at :math:`O(N^2)` cost; without it (Buntine 2009) the estimate stays
unbiased at :math:`O(N)`. The order is that of
:class:`~fabula.inference.topic_tokens.TokenLayout` (word ids ascending): any fixed order gives
an unbiased estimate of the same :math:`p(w)`, the token sequence's probability, as the other
bag-of-words stories score.

References: H. Wallach, I. Murray, R. Salakhutdinov, D. Mimno. Evaluation Methods for Topic
Models. ICML 2009. W. Buntine. Estimating Likelihoods for Topic Models. ACML 2009.
"""

from __future__ import annotations

import math

import torch

from fabula.inference.topic_tokens import TokenLayout, categorical_rows


@torch.no_grad()
def left_to_right(story, counts: torch.Tensor, particles: int = 20) -> torch.Tensor:
    """``[B]``: :math:`\\log \\hat p(w)` of each document of ``counts`` (``[B, V]``) under an
    LDA-form story (:class:`~fabula.models.capabilities.DirichletTopics`) with ``particles`` particles."""
    beta_t = story.topic_word().T.contiguous()
    alpha = story.alpha
    layout = TokenLayout.of(counts)
    batch, topics = counts.shape[0], alpha.numel()
    doc_topic = torch.zeros(particles, batch, topics, device=counts.device, dtype=beta_t.dtype)
    log_p = torch.zeros(particles, batch, device=counts.device, dtype=torch.float64)
    for position, (start, stop) in enumerate(layout.positions()):
        n = stop - start
        docs = doc_topic[:, :n]
        joint = (docs + alpha) / (position + alpha.sum()) * beta_t[layout.words[start:stop]]
        log_p[:, :n] += joint.sum(-1).log().double()
        uniform = torch.rand(particles * n, device=counts.device, dtype=joint.dtype)
        topic = categorical_rows(joint.reshape(-1, topics), uniform).reshape(particles, n, 1)
        docs.scatter_add_(2, topic, torch.ones_like(topic, dtype=docs.dtype))
    estimate = torch.logsumexp(log_p, 0) - math.log(particles)
    out = torch.empty_like(estimate)
    out[layout.order] = estimate
    return out.to(counts.dtype)
