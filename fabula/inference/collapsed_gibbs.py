r"""Collapsed Gibbs sampling of LDA's token topics (Griffiths & Steyvers 2004).

With :math:`\theta_d \sim \mathrm{Dir}(\alpha)` and the topics :math:`\beta_k \sim \mathrm{Dir}(\eta)`
integrated out, each token's topic given all the others is

.. math:: p(z_{d,i} = k \mid z_{-(d,i)}, w) \propto (n_{dk}^{-} + \alpha_k)\,
          \frac{n_{k w_{d,i}}^{-} + \eta}{n_k^{-} + V\eta},

the counts :math:`n^-` leaving the token out. :func:`sweep` draws every token of a batch once,
position by position (:class:`~fabula.inference.topic_tokens.TokenLayout`), the documents of a
position at once: exact Gibbs within a document, while the documents of one position see each
other's topic-word counts only after it, the approximation of AD-LDA (Newman et al. 2009),
which Newman et al. found to fit as well as the sequential sampler. With the topics given
(``beta``) the documents are independent and the sweep is exact Gibbs for all of them.

:class:`CollapsedGibbs` trains a story of LDA's form
(:class:`~fabula.models.capabilities.DirichletTopics`) with it: one sweep of the batch's tokens per
step, the topics then set to their posterior mean :math:`E[\beta_k \mid z, w] = (n_{kw} + \eta) /
(n_k + V\eta)`. Written by hand: Pyro has no sampler over per-token topics with
:math:`\theta` and :math:`\beta` collapsed.

References: T. Griffiths, M. Steyvers. Finding scientific topics. PNAS 2004.
D. Newman, A. Asuncion, P. Smyth, M. Welling. Distributed Algorithms for Topic Models. JMLR 2009.
"""

from __future__ import annotations

import torch

from fabula.data.corpus import DataParallel
from fabula.errors import SettingsError, UsageError
from fabula.inference.topic_tokens import TokenLayout, categorical_rows
from fabula.inference.variational_bayes import TopicCountsTraining


@torch.no_grad()
def sweep(
    layout: TokenLayout,
    z: torch.Tensor,
    doc_topic: torch.Tensor,
    alpha: torch.Tensor,
    *,
    word_topic: torch.Tensor | None = None,
    topic_total: torch.Tensor | None = None,
    eta: float | None = None,
    beta: torch.Tensor | None = None,
) -> None:
    r"""One Gibbs draw of every token's topic, in place.

    :param z: ``[T]`` the topics, in the layout's slot order.
    :param doc_topic: ``[B, K]`` :math:`n_{dk}`, rows in the layout's ``order`` (longest first).
    :param word_topic: ``[V, K]`` :math:`n_{wk}` and ``topic_total`` ``[K]`` :math:`n_k` with the
        prior ``eta``: the topics collapsed (training).
    :param beta: ``[K, V]`` the topics given instead (the documents independent).
    """
    if (beta is None) == (word_topic is None):
        raise ValueError("give either the topic-word counts (collapsed topics) or beta")
    uniform = torch.rand(len(z), device=z.device, dtype=doc_topic.dtype)
    given = beta.T.contiguous() if beta is not None else None
    vocab = word_topic.shape[0] if word_topic is not None else 0
    for start, stop in layout.positions():
        n = stop - start
        words, old = layout.words[start:stop], z[start:stop]
        docs = doc_topic[:n]
        ones = torch.ones(n, 1, device=z.device, dtype=doc_topic.dtype)
        docs.scatter_add_(1, old[:, None], -ones)
        if given is None:
            word_topic.index_put_((words, old), -ones[:, 0], accumulate=True)
            topic_total.index_add_(0, old, -ones[:, 0])
            weights = (docs + alpha) * (word_topic[words] + eta) / (topic_total + vocab * eta)
        else:
            weights = (docs + alpha) * given[words]
        new = categorical_rows(weights, uniform[start:stop])
        docs.scatter_add_(1, new[:, None], ones)
        if given is None:
            word_topic.index_put_((words, new), ones[:, 0], accumulate=True)
            topic_total.index_add_(0, new, ones[:, 0])
        z[start:stop] = new


def corpus_tokens(data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lengths [D], words [T])`` of a bag-of-words corpus: each document's tokens in the
    order of :class:`~fabula.inference.topic_tokens.TokenLayout` (word ids ascending), documents
    in the corpus's order."""
    rows = torch.repeat_interleave(torch.arange(len(data)), data.indptr.diff())
    entries = torch.argsort(rows * len(data.vocab) + data.ids)
    words = data.ids[entries].repeat_interleave(data.counts[entries].round().long())
    return data.lengths.round().long(), words


class CollapsedGibbs(TopicCountsTraining):
    r"""Trains an LDA-form story by collapsed Gibbs sampling (:func:`sweep`), one sweep of the
    batch's tokens per step.

    Its state is every training token's topic (``[T]``, documents in the training split's order,
    each one's tokens by ascending word id), started uniformly at random in :meth:`begin`; the
    counts are kept beside it and rebuilt from it when a checkpoint is loaded. After each step
    the story's topics are :math:`E[\beta \mid z, w]`. A step reports ``loss``, the mean of
    :math:`-\log \hat\beta_{z, w}` over the batch's tokens at the new topics (nats per token).

    Its λ source fits a Dirichlet :math:`q(\theta)` per document to the sampled topics by
    mean-field updates (:class:`~fabula.inference.variational_bayes.MeanFieldTopics`), so the
    ELBO and importance-weighted estimators score a sampled story as any other; the
    left-to-right estimator needs no q.
    """

    def __init__(self, story, iterations: int = 100, tolerance: float = 1e-3):
        super().__init__(story, "collapsed Gibbs sampling", iterations, tolerance)
        self.z: torch.Tensor | None = None
        self._counts = None

    def begin(self, data) -> None:
        """Index the training split's tokens; start their topics at random unless a checkpoint
        gave them."""
        if isinstance(data, DataParallel):
            raise SettingsError(
                "collapsed Gibbs sampling keeps every token's topic in one process: run it without torchrun"
            )
        device = self.story.device
        lengths, self._words = corpus_tokens(data)
        self.lengths, self._words = lengths.to(device), self._words.to(device)
        self.starts = self.lengths.cumsum(0) - self.lengths
        total = len(self._words)
        if self.z is None:
            self.z = torch.randint(self.story.alpha.numel(), (total,), device=device)
        elif len(self.z) != total:
            raise SettingsError(
                f"the saved topics cover {len(self.z)} tokens; the training split has {total}"
            )
        self._counts = None

    def _rebuild_counts(self) -> None:
        """:math:`n_{dk}`, :math:`n_{wk}`, :math:`n_k` from the topics of every training token."""
        device, K = self.z.device, self.story.alpha.numel()
        doc_topic = torch.zeros(len(self.lengths), K, device=device)
        word_topic = torch.zeros(self.story.vocab_size, K, device=device)
        docs = torch.arange(len(self.lengths), device=device).repeat_interleave(self.lengths)
        words = self._words
        ones = torch.ones(len(self.z), device=device)
        doc_topic.index_put_((docs, self.z), ones, accumulate=True)
        word_topic.index_put_((words, self.z), ones, accumulate=True)
        self._counts = (doc_topic, word_topic, word_topic.sum(0))

    def step(self, batch) -> dict[str, float]:
        if self.z is None:
            raise UsageError("call begin(data) with the training split before the first step")
        if self._counts is None:
            self._rebuild_counts()
        doc_topic, word_topic, topic_total = self._counts
        layout = TokenLayout.of(batch.counts)
        docs = batch.index.to(self.z.device)
        within = torch.arange(len(layout.tokens), device=self.z.device)
        owner = torch.arange(batch.size, device=self.z.device).repeat_interleave(layout.lengths)
        first = layout.lengths.cumsum(0) - layout.lengths
        token = (self.starts[docs][owner] + within - first[owner])[layout.tokens]
        z = self.z[token]
        rows = docs[layout.order]
        local = doc_topic[rows]
        eta = self.story.eta
        sweep(layout, z, local, self.story.alpha, word_topic=word_topic, topic_total=topic_total, eta=eta)
        self.z[token] = z
        doc_topic[rows] = local
        beta = (word_topic.T + eta) / (topic_total[:, None] + self.story.vocab_size * eta)
        self.story.set_topics(beta)
        self.num_steps += 1
        return {"loss": float(-beta[z, layout.words].log().mean())}

    def state_dict(self) -> dict:
        """Every training token's topic (the counts follow from them) and the step count."""
        return {"z": self.z, "num_steps": self.num_steps}

    def load_state_dict(self, state: dict) -> None:
        self.z, self.num_steps, self._counts = state["z"], state["num_steps"], None
