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
(:class:`~fabula.models.capabilities.DirichletTopics`) with it: ``sweeps`` sweeps of the batch's
tokens per step, the topics then set to their posterior mean :math:`E[\beta_k \mid z, w] = (n_{kw} + \eta) /
(n_k + V\eta)`. Written by hand: Pyro has no sampler over per-token topics with
:math:`\theta` and :math:`\beta` collapsed.

:class:`TopicGibbs` samples the token topics of held-out documents under a trained LDA-form
story with the same sweep, the topics given: an MCMC kernel
(:class:`~fabula.inference.kernels.StepKernel`) that :class:`~fabula.inference.MCMC` runs and
:func:`~fabula.diagnostics.to_arviz` exports, its draws of :math:`\theta_d` an MCMC sample of
the story's exact posterior :math:`p(\theta_d \mid w_d)`.

References: T. Griffiths, M. Steyvers. Finding scientific topics. PNAS 2004.
D. Newman, A. Asuncion, P. Smyth, M. Welling. Distributed Algorithms for Topic Models. JMLR 2009.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fabula.data.corpus import DataParallel
from fabula.errors import SettingsError, UsageError
from fabula.inference.kernels import StepKernel
from fabula.inference.topic_tokens import TokenLayout, categorical_rows
from fabula.inference.variational_bayes import TopicCountsTraining, refuse_untopical
from fabula.settings import COUNT


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
    K = doc_topic.shape[-1]
    uniform = torch.rand(len(z), device=z.device, dtype=doc_topic.dtype)
    # the priors folded into the counts once, so that a token's weights are two products
    docs_prior = doc_topic + alpha
    if beta is not None:
        words_weight = beta.T.contiguous()
    else:
        vocab = word_topic.shape[0]
        words_weight, totals = word_topic + eta, topic_total + vocab * eta
        flat_words = words_weight.view(-1)
        word_rows = layout.words * K
    doc_rows = torch.arange(len(doc_topic), device=z.device) * K
    flat_docs = docs_prior.view(-1)
    for start, stop in layout.positions():
        n = stop - start
        old = z[start:stop]
        ones = torch.ones(n, device=z.device, dtype=doc_topic.dtype)
        flat_docs.index_add_(0, doc_rows[:n] + old, ones, alpha=-1)
        weights = words_weight.index_select(0, layout.words[start:stop])
        if beta is None:
            flat_words.index_add_(0, word_rows[start:stop] + old, ones, alpha=-1)
            totals.index_add_(0, old, ones, alpha=-1)
            weights.div_(totals)
        weights.mul_(docs_prior[:n])
        new = categorical_rows(weights, uniform[start:stop])
        flat_docs.index_add_(0, doc_rows[:n] + new, ones)
        if beta is None:
            flat_words.index_add_(0, word_rows[start:stop] + new, ones)
            totals.index_add_(0, new, ones)
        z[start:stop] = new
    doc_topic.copy_((docs_prior - alpha).round())  # whole counts again, free of the priors' rounding
    if beta is None:
        word_topic.copy_((words_weight - eta).round())
        topic_total.copy_((totals - vocab * eta).round())


def corpus_tokens(data) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lengths [D], words [T])`` of a bag-of-words corpus: each document's tokens in the
    order of :class:`~fabula.inference.topic_tokens.TokenLayout` (word ids ascending), documents
    in the corpus's order."""
    rows = torch.repeat_interleave(torch.arange(len(data)), data.indptr.diff())
    entries = torch.argsort(rows * len(data.vocab) + data.ids)
    words = data.ids[entries].repeat_interleave(data.counts[entries].round().long())
    return data.lengths.round().long(), words


class CollapsedGibbs(TopicCountsTraining):
    r"""Trains an LDA-form story by collapsed Gibbs sampling (:func:`sweep`), ``sweeps`` sweeps of
    the batch's tokens per step (with a batch of the whole training split, an epoch is that many
    sweeps of the corpus between two evaluations).

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

    def __init__(self, story, sweeps: int = 1, iterations: int = 100, tolerance: float = 1e-3):
        super().__init__(story, "collapsed Gibbs sampling", iterations, tolerance)
        COUNT.check("sweeps", sweeps, int)
        self.sweeps = sweeps
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
        for _ in range(self.sweeps):
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


@dataclass
class _TopicState:
    layout: TokenLayout
    rank: torch.Tensor  # [T]: each slot's document, as its index into layout.order
    alpha: torch.Tensor  # [K]
    beta: torch.Tensor  # [K, V], the story's topics
    z: torch.Tensor  # [T]: each token's topic, in slot order
    doc_topic: torch.Tensor  # [B, K]: n_dk, rows in layout.order


class TopicGibbs(StepKernel):
    r"""Collapsed Gibbs sampling of the token topics of held-out documents under an LDA-form
    story (:class:`~fabula.models.capabilities.DirichletTopics`), its topics :math:`\beta` held
    fixed and each document's proportions :math:`\theta_d` integrated out (Griffiths & Steyvers
    2004). The chain's state is every token's topic :math:`z` of the batch
    (:class:`~fabula.inference.topic_tokens.TokenLayout`); a transition is one :func:`sweep` with
    ``beta``, each token drawn from

    .. math:: p(z_{d,i} = k \mid z_{-(d,i)}, w) \propto (n_{dk}^{-} + \alpha_k)\, \beta_{k w_{d,i}},

    exact Gibbs, the documents independent. :meth:`init` draws each token's topic from
    :math:`p(z_{d,i} = k \mid \theta_d, w) \propto \theta_{dk} \beta_{k w_{d,i}}` at the start's
    ``"theta"`` (a guide's mean, or a prior draw); ``warmup`` sweeps are burn-in.

    :meth:`draw` returns ``{"theta": [B, K]}``, a draw of the exact conditional
    :math:`p(\theta_d \mid z_d) = \mathrm{Dir}(n_d + \alpha)` per document (:math:`n_{dk}` the
    document's tokens of topic :math:`k`), so that the chain on :math:`(z, \theta)` leaves
    :math:`p(z, \theta \mid w)` invariant and its :math:`\theta` draws are an MCMC sample of the
    story's exact posterior :math:`p(\theta \mid w)` at site ``"theta"``. The draw is
    Rao-Blackwellisable: the conditional mean :math:`E[\theta_d \mid z_d] = (n_d + \alpha) /
    (N_d + \sum_k \alpha_k)` averaged over the chain estimates :math:`E[\theta_d \mid w]` with
    less variance.

    Statistic per draw and datum: ``lp``, the log joint of the state,

    .. math:: \log p(w_d, z_d) = \log \frac{\Gamma(\sum_k \alpha_k)}{\Gamma(N_d + \sum_k \alpha_k)}
              \prod_k \frac{\Gamma(n_{dk} + \alpha_k)}{\Gamma(\alpha_k)}
              + \sum_i \log \beta_{z_{d,i} w_{d,i}}.

    Written by hand: the story sums the token topics out, and Pyro has no Gibbs sampler over them.

    References: T. Griffiths, M. Steyvers. Finding scientific topics. PNAS 2004.
    """

    name = "topic Gibbs"

    @torch.no_grad()
    def init(self, story, batch, start, warmup) -> _TopicState:
        refuse_untopical(story, "the topic Gibbs kernel")
        beta = story.topic_word().detach()
        layout = TokenLayout.of(batch.counts)
        offsets = torch.tensor(layout.offsets, device=beta.device)
        rank = torch.arange(len(layout.words), device=beta.device)
        rank -= offsets[:-1].repeat_interleave(offsets.diff())
        theta = start["theta"].detach().to(beta.dtype)[layout.order]
        weights = theta[rank] * beta.T[layout.words]
        z = categorical_rows(weights, torch.rand(len(rank), device=beta.device, dtype=beta.dtype))
        doc_topic = beta.new_zeros(batch.size, beta.shape[0]).index_put_(
            (rank, z), beta.new_ones(len(z)), accumulate=True
        )
        return _TopicState(layout, rank, story.alpha.to(beta.dtype), beta, z, doc_topic)

    def sample(self, state: _TopicState) -> _TopicState:
        z, doc_topic = state.z.clone(), state.doc_topic.clone()
        sweep(state.layout, z, doc_topic, state.alpha, beta=state.beta)
        return replace(state, z=z, doc_topic=doc_topic)

    def draw(self, state: _TopicState) -> dict[str, torch.Tensor]:
        theta = torch.distributions.Dirichlet(state.doc_topic + state.alpha).sample()
        return {"theta": _in_batch_order(state, theta)}

    def stats(self, state: _TopicState) -> dict[str, torch.Tensor]:
        alpha, n = state.alpha, state.doc_topic
        prior = (
            torch.lgamma(alpha.sum())
            - torch.lgamma(n.sum(-1) + alpha.sum())
            + (torch.lgamma(n + alpha) - torch.lgamma(alpha)).sum(-1)
        )
        words = state.beta[state.z, state.layout.words].log()
        likelihood = torch.zeros_like(prior).index_add_(0, state.rank, words)
        return {"lp": _in_batch_order(state, prior + likelihood)}


def _in_batch_order(state: _TopicState, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (one per document, in the layout's ``order``) in the batch's order."""
    out = torch.empty_like(rows)
    out[state.layout.order] = rows
    return out
