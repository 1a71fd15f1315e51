r"""Output layers: the distribution of the next word given a decoder's hidden state,
:math:`p(w \mid h)`, as a swappable part of every sentence story (``--output``).

Each layer gives the exact normalised :math:`\log p(w \mid h)` of chosen words
(:meth:`OutputLayer.log_prob`, the cheap path training and scoring take) and of every word
(:meth:`OutputLayer.log_probs`, for drawing and choosing candidates). Only ``sampled`` trains on
an estimate (:meth:`OutputLayer.training_log_prob`); every layer evaluates exactly.

A layer is named by a spec in the grammar of inference specs (:mod:`fabula.inference.spec`):
``full``, ``class:100``, ``adaptive:cutoffs=2000/5000``, ``sampled:1024``, ``mos:5``, ``kerbs:3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fabula.errors import SettingsError
from fabula.settings import COUNT, Range, check_options, setting


class OutputLayer(nn.Module):
    r""":math:`p(w \mid h)` over ``vocab_size`` words from ``[..., hidden_dim]`` states."""

    estimator = "exact"
    """What :meth:`training_log_prob` computes: ``"exact"`` where it is :meth:`log_prob`."""

    def __init__(self, hidden_dim: int, vocab_size: int):
        super().__init__()
        self.hidden_dim, self.vocab_size = hidden_dim, vocab_size

    def log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(w_i \mid h_i)`: ``h [..., H]``, ``targets [...]`` → ``[...]``."""
        lead = targets.shape
        return self._log_prob(h.reshape(-1, self.hidden_dim), targets.reshape(-1)).reshape(lead)

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(\cdot \mid h)` over the whole vocabulary: ``[..., H]`` → ``[..., V]``."""
        lead = h.shape[:-1]
        return self._log_probs(h.reshape(-1, self.hidden_dim)).reshape(*lead, self.vocab_size)

    def training_log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """What training maximises in place of :meth:`log_prob` (the same but for ``sampled``)."""
        return self.log_prob(h, targets)

    def fit_frequencies(self, counts: torch.Tensor) -> None:
        """Arrange the layer by the training corpus's word counts ``[V]`` (frequency classes,
        adaptive clusters, the sampling proposal). Without it, word ids are read as frequency
        ranks, as :meth:`fabula.data.TextVocab.build` orders them."""

    def _log_prob(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._log_probs(h).gather(1, targets[:, None]).squeeze(1)

    def _log_probs(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _frequency_ranks(counts: torch.Tensor) -> torch.Tensor:
    """``[V]`` word ids by descending count (ties by id)."""
    return torch.sort(-counts.double(), stable=True).indices


def _segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, num: int) -> torch.Tensor:
    """``[R, num]``: the log-sum-exp of each row's ``values [R, V]`` over the columns of each
    segment (``segment [V]`` in ``0 .. num - 1``), stable per segment."""
    index = segment.expand_as(values)
    top = values.new_full((values.shape[0], num), -torch.inf).scatter_reduce(1, index, values, "amax")
    top = torch.where(top.isfinite(), top, 0.0).detach()
    total = values.new_zeros(values.shape[0], num).index_add_(1, segment, (values - top[:, segment]).exp())
    return total.log() + top


class FullSoftmax(OutputLayer):
    r"""The full softmax, :math:`p(w \mid h) = \mathrm{softmax}(W h + b)_w` (as before)."""

    def __init__(self, hidden_dim: int, vocab_size: int):
        super().__init__(hidden_dim, vocab_size)
        # parameters named as nn.Linear's, so checkpoints from before output layers load
        linear = nn.Linear(hidden_dim, vocab_size)
        self.weight, self.bias = linear.weight, linear.bias

    def _log_prob(self, h, targets):
        return -F.cross_entropy(F.linear(h, self.weight, self.bias), targets, reduction="none")

    def _log_probs(self, h):
        return F.log_softmax(F.linear(h, self.weight, self.bias), -1)


class ClassFactoredSoftmax(OutputLayer):
    r"""Words in classes (Goodman 2001; Mikolov et al. 2011):

    .. math:: p(w \mid h) = p(c(w) \mid h)\, p(w \mid c(w), h)

    both factors softmaxes, the second over the class's words only. Classes by frequency
    binning: words by descending count, each class about :math:`1/C` of the training tokens (and
    at least one word), the counts plus one so that words the training text never uses do not
    all fall into one class. A token costs :math:`C + |c(w)|` dot products instead of :math:`V`.

    Reference: J. Goodman. Classes for fast maximum entropy training. ICASSP 2001.
    """

    def __init__(self, hidden_dim: int, vocab_size: int, classes: int | None = None):
        super().__init__(hidden_dim, vocab_size)
        self.num_classes = classes or max(1, round(math.sqrt(vocab_size)))
        if self.num_classes > vocab_size:
            raise SettingsError(
                f"class:{self.num_classes} needs at most as many classes as words ({vocab_size})"
            )
        self.classes = nn.Linear(hidden_dim, self.num_classes)
        self.words = nn.Linear(hidden_dim, vocab_size)
        # equal bins by id until fit_frequencies (what binning equal counts gives)
        self.register_buffer("class_of", torch.arange(vocab_size) * self.num_classes // vocab_size)

    def _binned(self, counts: torch.Tensor) -> torch.Tensor:
        counts = counts.double() + 1  # words the training text never uses spread over the last classes
        ranked = _frequency_ranks(counts)
        share = ((counts[ranked].cumsum(0) - counts[ranked]) / counts.sum()).tolist()
        C, V = self.num_classes, self.vocab_size
        index, previous = [], -1
        for r, before in enumerate(share):
            wanted = max(min(int(before * C), C - 1), C - (V - r))  # leave a word for each later class
            previous = max(previous, min(wanted, previous + 1))  # no class skipped, none revisited
            index.append(previous)
        class_of = torch.empty(V, dtype=torch.long)
        class_of[ranked] = torch.tensor(index)
        return class_of

    def fit_frequencies(self, counts):
        self.class_of.copy_(self._binned(counts.to(self.class_of.device)))

    def _log_prob(self, h, targets):
        cls = self.class_of[targets]
        log_class = F.log_softmax(self.classes(h), -1).gather(1, cls[:, None]).squeeze(1)
        members = torch.sort(self.class_of, stable=True).indices  # words grouped by class
        sizes = torch.bincount(self.class_of, minlength=self.num_classes)
        ends = sizes.cumsum(0)
        starts = ends - sizes
        place = torch.empty_like(members)
        place[members] = torch.arange(self.vocab_size, device=members.device) - starts[self.class_of[members]]
        rows_by_class = torch.sort(cls, stable=True).indices
        rows_per_class = torch.bincount(cls, minlength=self.num_classes).tolist()
        # one gather and one split each (their backward passes are one scatter and one cat)
        states = h[rows_by_class].split(rows_per_class)
        per_class = sizes.tolist()
        weights, biases = (
            self.words.weight[members].split(per_class),
            self.words.bias[members].split(per_class),
        )
        places = place[targets[rows_by_class]].split(rows_per_class)
        parts = []
        for c, n in enumerate(rows_per_class):
            if n:
                logits = F.linear(states[c], weights[c], biases[c])
                parts.append(logits.gather(1, places[c][:, None]).squeeze(1) - logits.logsumexp(-1))
        within = torch.cat(parts) if parts else h.new_zeros(0)
        return log_class + within[torch.argsort(rows_by_class)]

    def _log_probs(self, h):
        logits = self.words(h)
        within = logits - _segment_logsumexp(logits, self.class_of, self.num_classes)[:, self.class_of]
        return F.log_softmax(self.classes(h), -1)[:, self.class_of] + within


class AdaptiveSoftmax(OutputLayer):
    r"""The adaptive softmax (Grave et al. 2017): a head of the most frequent words and one entry
    per tail cluster, each cluster a softmax over its words from a state projected to
    :math:`H / \mathrm{div}^i` dimensions; exact and normalised. Built on
    :class:`torch.nn.AdaptiveLogSoftmaxWithLoss`, over words ranked by training frequency.

    Reference: E. Grave et al. Efficient softmax approximation for GPUs. ICML 2017.
    """

    def __init__(
        self, hidden_dim: int, vocab_size: int, cutoffs: tuple[int, ...] | None = None, div: float = 4.0
    ):
        super().__init__(hidden_dim, vocab_size)
        if cutoffs is None:
            cutoffs = tuple(sorted({max(1, round(vocab_size * f)) for f in (0.2, 0.5)} - {vocab_size}))
        if (
            not cutoffs
            or list(cutoffs) != sorted(set(cutoffs))
            or cutoffs[0] < 1
            or cutoffs[-1] >= vocab_size
        ):
            raise SettingsError(
                f"adaptive cutoffs must rise strictly within 1 .. {vocab_size - 1}, got {'/'.join(map(str, cutoffs))}"
            )
        narrowest = hidden_dim // div ** len(cutoffs)
        if narrowest < 1:
            raise SettingsError(
                f"adaptive: the last tail cluster's state, {hidden_dim} // {div}^{len(cutoffs)}, is empty; "
                "give a smaller div or fewer cutoffs"
            )
        self.cutoffs = tuple(cutoffs)
        self.layer = nn.AdaptiveLogSoftmaxWithLoss(hidden_dim, vocab_size, list(cutoffs), div_value=div)
        self.register_buffer("rank", torch.arange(vocab_size))  # word id -> frequency rank

    def fit_frequencies(self, counts):
        ranked = _frequency_ranks(counts)
        self.rank[ranked.to(self.rank.device)] = torch.arange(self.vocab_size, device=self.rank.device)

    def _log_prob(self, h, targets):
        return self.layer(h, self.rank[targets]).output

    def _log_probs(self, h):
        return self.layer.log_prob(h)[:, self.rank]


class SampledSoftmax(FullSoftmax):
    r"""The full softmax, trained on Jean et al.'s sampled-softmax estimate: ``negatives`` words
    :math:`j_1..j_S` drawn per batch from a log-uniform (Zipfian) proposal over frequency ranks,
    :math:`Q(r) = \log\frac{r + 2}{r + 1} / \log(V + 1)`, and

    .. math:: \widehat{\log p}(w \mid h) = \tilde o_w - \log\Big(e^{\tilde o_w} +
              \sum_{s: j_s \ne w} e^{\tilde o_{j_s}}\Big), \qquad \tilde o_j = o_j - \log(S\,Q(j))

    with :math:`o = W h + b`. Evaluation, scoring and drawing use the exact full softmax.

    Reference: S. Jean et al. On Using Very Large Target Vocabulary for Neural Machine
    Translation. ACL 2015.
    """

    def __init__(self, hidden_dim: int, vocab_size: int, negatives: int = 1024):
        super().__init__(hidden_dim, vocab_size)
        self.negatives = negatives
        self.estimator = f"sampled softmax ({negatives} log-uniform negatives)"
        ranks = torch.arange(vocab_size, dtype=torch.float64)
        log_q = torch.log1p(1 / (ranks + 1)).log() - math.log(math.log(vocab_size + 1))
        self.register_buffer("log_proposal", log_q.float())
        self.register_buffer("by_rank", torch.arange(vocab_size))  # frequency rank -> word id

    def fit_frequencies(self, counts):
        self.by_rank.copy_(_frequency_ranks(counts).to(self.by_rank.device))

    def proposal(self) -> torch.Tensor:
        """``[V]`` :math:`\\log Q` of each word id."""
        return torch.empty_like(self.log_proposal).scatter_(0, self.by_rank, self.log_proposal)

    def draw_negatives(self) -> torch.Tensor:
        """``[S]`` word ids drawn with replacement from the proposal."""
        return self.by_rank[torch.multinomial(self.log_proposal.exp(), self.negatives, replacement=True)]

    def training_log_prob(self, h, targets, negatives: torch.Tensor | None = None):
        """The sampled estimate (exact :meth:`log_prob` outside training or without gradients);
        ``negatives`` fixes the draw (tests)."""
        if not (self.training and torch.is_grad_enabled()):
            return self.log_prob(h, targets)
        lead = targets.shape
        h, targets = h.reshape(-1, self.hidden_dim), targets.reshape(-1)
        if negatives is None:
            negatives = self.draw_negatives()
        log_sq = self.proposal() + math.log(len(negatives))
        target = (h * self.weight[targets]).sum(-1) + self.bias[targets] - log_sq[targets]
        sampled = F.linear(h, self.weight[negatives], self.bias[negatives]) - log_sq[negatives]
        sampled = sampled.masked_fill(negatives[None, :] == targets[:, None], -torch.inf)  # accidental hits
        return (target - torch.cat([target[:, None], sampled], 1).logsumexp(-1)).reshape(lead)


class MixtureOfSoftmaxes(OutputLayer):
    r"""A mixture of softmaxes (Yang et al. 2018), which lifts the rank bottleneck of one softmax:

    .. math:: p(w \mid h) = \sum_{k=1}^{K} \pi_k(h)\, \mathrm{softmax}(W g_k(h) + b)_w, \qquad
              \pi(h) = \mathrm{softmax}(P h), \quad g_k(h) = \tanh(U_k h + c_k)

    Reference: Z. Yang et al. Breaking the Softmax Bottleneck: A High-Rank RNN Language Model. ICLR 2018.
    """

    def __init__(self, hidden_dim: int, vocab_size: int, components: int = 5):
        super().__init__(hidden_dim, vocab_size)
        self.components = components
        self.prior = nn.Linear(hidden_dim, components, bias=False)
        self.latent = nn.Linear(hidden_dim, components * hidden_dim)
        self.linear = nn.Linear(hidden_dim, vocab_size)

    def _per_component(self, h):
        g = torch.tanh(self.latent(h)).reshape(-1, self.components, self.hidden_dim)
        return F.log_softmax(self.prior(h), -1), self.linear(g)  # [R, K], [R, K, V]

    def _log_prob(self, h, targets):
        log_pi, logits = self._per_component(h)
        index = targets[:, None, None].expand(-1, self.components, 1)
        picked = logits.gather(2, index).squeeze(2) - logits.logsumexp(-1)
        return (log_pi + picked).logsumexp(-1)

    def _log_probs(self, h):
        log_pi, logits = self._per_component(h)
        return (log_pi[:, :, None] + F.log_softmax(logits, -1)).logsumexp(1)


class KernelizedBayesianSoftmax(OutputLayer):
    r"""KerBS (Miao et al. 2019): each word has senses with their own embeddings :math:`e_s` and
    kernel sharpness :math:`\theta_s`, and the sense is summed out exactly,

    .. math:: p(w \mid h) = \sum_{s \in w} \frac{e^{K_{\theta_s}(h, e_s)}}{\sum_{s'} e^{K_{\theta_{s'}}(h, e_{s'})}},
              \qquad K_\theta(h, e) = \begin{cases} 2a\,|h||e|\,(e^{\theta\cos(h, e)} - 1) & \cos > 0 \\
              |h||e| \cos(h, e) & \text{else} \end{cases}

    with :math:`a = 1 / (4(\theta^{-1}(e^\theta - 1) - 1))` and :math:`\theta = e^{\rho}`,
    :math:`\rho` learned. The sense budget, ``senses`` per word on average, is allocated
    dynamically: every ``reallocate_every`` training calls, the senses least used (by their
    posterior responsibility for their word's tokens) move from words holding several to the
    frequent words with the largest :math:`\overline{\mathrm{NLL}}\sqrt{n}`, at most
    ``max_senses`` per word and :math:`0.5\%` of the vocabulary per round.

    Reference: N. Miao et al. Kernelized Bayesian Softmax for Text Generation. NeurIPS 2019.
    """

    MOVED_SHARE = 0.005
    """Share of the vocabulary whose senses one reallocation moves at most (the paper's code)."""

    def __init__(
        self,
        hidden_dim: int,
        vocab_size: int,
        senses: int = 3,
        reallocate_every: int = 1000,
        max_senses: int = 4,
    ):
        super().__init__(hidden_dim, vocab_size)
        if max_senses < senses:
            raise SettingsError(f"kerbs: max_senses ({max_senses}) must be at least senses ({senses})")
        total = senses * vocab_size
        self.reallocate_every, self.max_senses = reallocate_every, max_senses
        self.embedding = nn.Parameter(torch.randn(total, hidden_dim) / math.sqrt(hidden_dim))
        self.sharpness = nn.Parameter(torch.zeros(total))  # rho; theta = exp(rho)
        self.register_buffer("word_of", torch.arange(total) % vocab_size)
        self.register_buffer("usage", torch.zeros(total))
        self.register_buffer("word_nll", torch.zeros(vocab_size))
        self.register_buffer("word_seen", torch.zeros(vocab_size))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def sense_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``[R, S]`` :math:`K_{\\theta_s}(h, e_s)` of every sense."""
        theta = self.sharpness.clamp(-4, 3).exp()
        a = 1 / (4 * (torch.expm1(theta) / theta - 1))
        dot = F.linear(h, self.embedding)
        norms = h.norm(dim=-1, keepdim=True) * self.embedding.norm(dim=-1) + 1e-7
        cos = dot / norms
        positive = 2 * a * norms * torch.expm1(theta * cos.clamp(min=0))
        return torch.where(cos > 0, positive, dot)

    def _log_probs(self, h):
        logits = self.sense_logits(h)
        return _segment_logsumexp(logits, self.word_of, self.vocab_size) - logits.logsumexp(-1, keepdim=True)

    def senses_of(self) -> torch.Tensor:
        """``[V, M]``: each word's sense ids, padded with ``S`` (a column of :math:`-\\infty`)."""
        order = torch.sort(self.word_of, stable=True).indices
        held = torch.bincount(self.word_of, minlength=self.vocab_size)
        starts = held.cumsum(0) - held
        table = torch.full((self.vocab_size, int(held.max())), len(order), device=order.device)
        table[
            self.word_of[order], torch.arange(len(order), device=order.device) - starts[self.word_of[order]]
        ] = order
        return table

    def _log_prob(self, h, targets):
        logits = self.sense_logits(h)
        senses = self.senses_of()[targets]  # [R, M], padded with S
        own = F.pad(logits, (0, 1), value=-torch.inf).gather(1, senses)
        log_p = own.logsumexp(-1) - logits.logsumexp(-1)
        if self.training and torch.is_grad_enabled():
            self._count(own.detach(), senses, log_p.detach(), targets)
        return log_p

    @torch.no_grad()
    def _count(self, own, senses, log_p, targets):
        """Accumulate each sense's responsibility for its word's tokens (``own`` logits of the
        ``senses`` of each target) and each word's NLL; reallocate every ``reallocate_every`` calls."""
        responsibility = (own - own.logsumexp(-1, keepdim=True)).exp().to(self.usage.dtype)
        usage = self.usage.new_zeros(len(self.usage) + 1).index_add_(
            0, senses.flatten(), responsibility.flatten()
        )
        self.usage += usage[:-1]
        self.word_nll.index_add_(0, targets, -log_p.to(self.word_nll.dtype))
        self.word_seen.index_add_(0, targets, self.word_seen.new_ones(len(targets)))
        self.calls += 1
        if self.reallocate_every and int(self.calls) % self.reallocate_every == 0:
            self.reallocate()

    @torch.no_grad()
    def reallocate(self) -> int:
        """Move senses as the class docstring says; returns how many moved, and restarts the counts."""
        held = torch.bincount(self.word_of, minlength=self.vocab_size)
        seen = self.word_seen
        frequent = seen > seen.median()
        need = torch.where(
            frequent & (held < self.max_senses),
            self.word_nll / seen.clamp(min=1) * seen.sqrt(),
            -torch.inf,
        )
        moved, budget = 0, max(1, int(self.vocab_size * self.MOVED_SHARE))
        donors = iter(torch.argsort(self.usage).tolist())
        for word in torch.argsort(need, descending=True)[:budget].tolist():
            if not math.isfinite(float(need[word])):
                break
            sense = next((s for s in donors if held[self.word_of[s]] > 1 and self.word_of[s] != word), None)
            if sense is None:
                break
            held[self.word_of[sense]] -= 1
            held[word] += 1
            self.word_of[sense] = word
            moved += 1
        self.usage.zero_(), self.word_nll.zero_(), self.word_seen.zero_()
        return moved


@dataclass(frozen=True)
class NoOptions:
    """The full softmax takes no options."""


@dataclass(frozen=True)
class ClassOptions:
    """The options of ``class``."""

    classes: int | None = setting(None, "word classes C", within=COUNT, unset="round(sqrt(V))")

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class AdaptiveOptions:
    """The options of ``adaptive``."""

    cutoffs: tuple[int, ...] | None = setting(
        None,
        "frequency ranks where the head and each tail cluster end",
        within=COUNT,
        unset="ranks V/5 and V/2",
    )
    div: float = setting(4.0, "each tail cluster's state is H / div^i wide", within=Range(at_least=1))

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class SampledOptions:
    """The options of ``sampled``."""

    negatives: int = setting(1024, "negative words drawn per batch", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class MixtureOptions:
    """The options of ``mos``."""

    components: int = setting(5, "softmaxes in the mixture K", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class KerBSOptions:
    """The options of ``kerbs``."""

    senses: int = setting(3, "senses per word on average", within=COUNT)
    reallocate_every: int = setting(
        1000, "training calls between sense reallocations (0: never)", within=Range(at_least=0)
    )
    max_senses: int = setting(4, "most senses one word may hold", within=COUNT)

    def __post_init__(self):
        check_options(self)


@dataclass(frozen=True)
class OutputKind:
    """A registered output layer: its class, options and the option a bare value sets."""

    layer: type[OutputLayer]
    options: type
    leading: str | None
    summary: str


#: The output layers, by the name ``--output`` takes.
OUTPUT_LAYERS: dict[str, OutputKind] = {
    "full": OutputKind(FullSoftmax, NoOptions, None, "the full softmax"),
    "class": OutputKind(
        ClassFactoredSoftmax, ClassOptions, "classes", "class-factored softmax (Goodman 2001)"
    ),
    "adaptive": OutputKind(
        AdaptiveSoftmax, AdaptiveOptions, "cutoffs", "adaptive softmax (Grave et al. 2017)"
    ),
    "sampled": OutputKind(
        SampledSoftmax,
        SampledOptions,
        "negatives",
        "full softmax trained by sampled softmax (Jean et al. 2015)",
    ),
    "mos": OutputKind(
        MixtureOfSoftmaxes, MixtureOptions, "components", "mixture of softmaxes (Yang et al. 2018)"
    ),
    "kerbs": OutputKind(
        KernelizedBayesianSoftmax, KerBSOptions, "senses", "kernelized Bayesian softmax (Miao et al. 2019)"
    ),
}


def parse_output(text: str):
    """``(kind, options)`` of an output spec, refused in one line if it names no layer or a bad option."""
    # imported here: fabula.inference imports the stories, whose decoders import this module
    from fabula.inference.spec import read_options, split

    spec = split(text)
    if spec.name not in OUTPUT_LAYERS:
        raise SettingsError(f"unknown output layer {spec.name!r}; choose from {', '.join(OUTPUT_LAYERS)}")
    kind = OUTPUT_LAYERS[spec.name]
    return kind, read_options(kind.options, kind.leading, spec, text, what="output layer")


def output_layer(text: str, hidden_dim: int, vocab_size: int) -> OutputLayer:
    """The output layer a spec names, for states of ``hidden_dim`` and ``vocab_size`` words.

    >>> import torch
    >>> from fabula.nn.output import output_layer
    >>> layer = output_layer("class:3", hidden_dim=4, vocab_size=10)
    >>> h, words = torch.randn(2, 4), torch.tensor([5, 7])
    >>> torch.allclose(layer.log_probs(h).logsumexp(-1), torch.zeros(2), atol=1e-6)  # normalised
    True
    >>> torch.allclose(layer.log_prob(h, words), layer.log_probs(h)[[0, 1], words])
    True
    >>> output_layer("mos:0", 4, 10)
    Traceback (most recent call last):
        ...
    fabula.errors.SettingsError: 'mos:0': components (softmaxes in the mixture K) must be an integer >= 1, got 0
    """
    kind, options = parse_output(text)
    values = {k: v for k, v in vars(options).items() if v is not None}
    return kind.layer(hidden_dim, vocab_size, **values)


def output_setting():
    """The ``output`` setting of a sentence story's settings (one declaration for every story),
    its help listing each layer and its options."""
    from fabula.inference.spec import describe  # imported here, as in parse_output

    layers = "; ".join(
        f"{name}: {kind.summary}"
        + (f", options {describe(kind.options, kind.leading)}" if kind.leading else "")
        for name, kind in OUTPUT_LAYERS.items()
    )
    return setting("full", f"output layer p(w | h), a spec NAME[:OPTIONS]. {layers}")
