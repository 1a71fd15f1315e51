"""docNADE (Larochelle & Lauly 2012): a neural autoregressive model of documents, with no latent."""

from __future__ import annotations

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from fabula.distributions.autoregressive_bag import AutoregressiveBagOfWords
from fabula.models.story import Story

#: The hidden activations :math:`g` a docNADE may have.
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}
#: Logits materialised at once (tokens times vocabulary) when scoring: the chunk of positions.
CHUNK_ELEMENTS = 2**22


class DocNADE(Story):
    r"""docNADE: the tokens :math:`v_1..v_D` of a document, in an order :math:`o`, each drawn given
    the ones before it,

    .. math::
        h_i = g\Big(c + \sum_{k<i} W_{:, v_k}\Big), \qquad
        p(v_i = w \mid v_{<i}) = \mathrm{softmax}(b + U h_i)_w, \qquad
        \log p(v_o) = \sum_{i=1}^D \log p(v_{o_i} \mid v_{o_{<i}}),

    with :math:`W \in \mathbb R^{H\times V}`, :math:`c \in \mathbb R^H` (``encoder``, so that
    :math:`h_i = g(\mathrm{encoder}(x_{<i}))` for the counts :math:`x_{<i}` of the prefix),
    :math:`U \in \mathbb R^{V\times H}`, :math:`b \in \mathbb R^V` (``decoder``) and :math:`g` the
    sigmoid (as the paper) or tanh. The softmax is a full one over the vocabulary (the paper used a
    binary tree softmax, :math:`O(\log V)` per token); :meth:`sequence_log_prob` computes every
    :math:`h_i` at once from cumulative sums of the columns :math:`W_{:, v_k}` and the softmax in
    chunks of positions, so that scoring without gradients holds a bounded number of logits
    (``CHUNK_ELEMENTS``; training keeps each token's log-softmax for the backward pass).

    For an order, :math:`\log p(v_o)` is exact. The data are counts, whose tokens come in no order:
    the observation ``"x"`` (:class:`~fabula.distributions.AutoregressiveBagOfWords`) reads each
    document in one fresh uniform random order in training (a new one each step),
    and in evaluation mode, as :meth:`log_prob` always does, in ``orders`` orders fixed by the
    document's index in its corpus (the same figure on every evaluation), averaging the
    log-probability of the token sequence in each order. Like
    :class:`~fabula.distributions.BagOfWordsMultinomial`, that is a token sequence's probability
    without the multinomial coefficient, so perplexity is per token and compares with the other
    bag-of-words stories. One order (the default) is what training sees and costs one pass; more
    orders average out the variation between orders (their mean log-probability, not the log of
    their mean probability). Topic :math:`j` is hidden unit :math:`j`: the words :math:`w` with the
    largest :math:`W_{jw}` (:meth:`topic_words`).

    :param vocab_size: :math:`V`.
    :param hidden: :math:`H`, the hidden units.
    :param activation: :math:`g`, ``"sigmoid"`` or ``"tanh"``.
    :param orders: the orders averaged per document in evaluation.

    References: H. Larochelle, S. Lauly. A Neural Autoregressive Topic Model. NIPS 2012.
    """

    latent_sites = ()
    reads = "documents"

    def __init__(self, vocab_size: int, hidden: int = 50, activation: str = "sigmoid", orders: int = 1):
        super().__init__()
        self.remember(locals())
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        if orders < 1:
            raise ValueError(f"orders must be >= 1, got {orders}")
        self.vocab_size, self.hidden, self.activation, self.orders = vocab_size, hidden, activation, orders
        self.encoder = nn.Linear(vocab_size, hidden)
        self.decoder = nn.Linear(hidden, vocab_size)

    @torch.no_grad()
    def init_background(self, corpus) -> None:
        """Start the bias :math:`b` at the corpus's add-one log unigram frequencies, so that
        training begins from the background word distribution rather than a uniform one."""
        self.decoder.bias.copy_(corpus.log_unigram().to(self.decoder.bias.device))

    def _g(self, pre: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.activation](pre)

    def sequence_log_prob(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        r"""``[...]``: :math:`\log p(v_o)` of each row of ``tokens`` (``[..., D]`` word ids) read left
        to right, its first ``lengths`` (``[...]``) tokens."""
        shape, D = tokens.shape[:-1], tokens.shape[-1]
        lengths = lengths.long().expand(shape).reshape(-1)
        kept = torch.arange(D, device=tokens.device) < lengths[:, None]
        words = tokens.reshape(-1, D)[kept]  # [T], the documents one after another
        document = kept.nonzero()[:, 0]
        # the columns W[:, v] of the tokens before each one: a running sum over all documents (in
        # float64, so that subtracting the documents before loses nothing) less each one's start
        columns = self.encoder.weight.T[words].double()
        before = torch.cat([columns.new_zeros(1, self.hidden), columns.cumsum(0)])
        start = before[(lengths.cumsum(0) - lengths)[document]]
        pre = (before[:-1] - start).to(self.encoder.weight.dtype) + self.encoder.bias
        chunk = max(1, CHUNK_ELEMENTS // self.vocab_size)
        per_token = [
            -F.cross_entropy(
                self.decoder(self._g(pre[s : s + chunk])), words[s : s + chunk], reduction="none"
            )
            for s in range(0, len(words), chunk)
        ]
        log_p = pre.new_zeros(len(lengths))
        if per_token:
            log_p = log_p.index_add(0, document, torch.cat(per_token))
        return log_p.reshape(shape)

    @torch.no_grad()
    def draw(self, lengths: torch.Tensor) -> torch.Tensor:
        """``[n, V]``: the word counts of documents of the given ``lengths`` (``[n]``), their tokens
        drawn one at a time."""
        lengths = lengths.long()
        pre = self.encoder.bias.expand(len(lengths), self.hidden).clone()
        counts = pre.new_zeros(len(lengths), self.vocab_size)
        for i in range(int(lengths.max()) if len(lengths) else 0):
            word = torch.distributions.Categorical(logits=self.decoder(self._g(pre))).sample()
            live = (i < lengths).to(pre.dtype)[:, None]
            counts.scatter_add_(1, word[:, None], live)
            pre += live * self.encoder.weight.T[word]
        return counts

    def likelihood(self, batch, fixed: bool) -> AutoregressiveBagOfWords:
        """The batch's documents: read in ``orders`` orders fixed by their index, or (``fixed``
        false) in one fresh random order each."""
        if batch.counts.shape[-1] != self.vocab_size:
            raise ValueError(
                f"batch has {batch.counts.shape[-1]} words per count vector, the story expects {self.vocab_size}"
            )
        if fixed:
            return AutoregressiveBagOfWords(
                self, batch.lengths, self.orders, batch.index, validate_args=False
            )
        return AutoregressiveBagOfWords(self, batch.lengths, validate_args=False)

    def model(self, batch) -> None:
        with self.data_plate(batch):
            pyro.sample("x", self.likelihood(batch, fixed=not self.training), obs=batch.counts)

    def log_prob(self, batch) -> torch.Tensor:
        """``[B]``: each document's log-probability averaged over its ``orders`` fixed orders."""
        return self.likelihood(batch, fixed=True).log_prob(batch.counts)

    def num_tokens(self, batch) -> torch.Tensor:
        return batch.lengths

    def prior_sample(self, num: int) -> dict[str, torch.Tensor]:
        return {}

    def generate(self, lengths: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Word counts of ``len(lengths)`` documents with the given token counts (there is no ``z``)."""
        if z is not None:
            raise ValueError("docNADE has no latent code z to generate from")
        return self.draw(torch.as_tensor(lengths, device=self.device))

    @torch.no_grad()
    def topic_words(self, k: int = 10) -> torch.Tensor:
        """``[H, k]``: the ids of the ``k`` words with the largest :math:`W_{jw}` for each hidden
        unit ``j``, largest first."""
        return self.encoder.weight.topk(k, dim=1).indices

    def topics(self, words: list[str], k: int = 10) -> list[list[str]]:
        """The words of :meth:`topic_words`."""
        if len(words) != self.vocab_size:
            raise ValueError(f"{len(words)} words given for a vocabulary of {self.vocab_size}")
        return [[words[i] for i in row] for row in self.topic_words(k).tolist()]
