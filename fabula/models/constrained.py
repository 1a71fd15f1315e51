r"""Sentences under constraints: the target of constrained generation by Metropolis-Hastings (CGMH).

.. math::

    \pi(x) \propto p_{LM}(x)\; \prod_i c_i(x)\; e^{\lambda |x|}, \qquad x \in W^n,\ 1 \le n \le N

over sentences :math:`x` of :math:`n` words from the word set :math:`W` (the vocabulary less
``<pad> <bos> <eos>`` and, unless allowed, ``<unk>``), with :math:`p_{LM}` any sentence story
with an exact :meth:`~fabula.models.capabilities.ExactLikelihood.log_prob` (an :class:`~fabula.models.RNNLM` reading left to right), the
hard constraints :math:`c_{\mathrm{key}}(x) \in \{0, 1\}` (every keyword present as often as it is
given, in the given order when ``ordered``), the soft similarity to a source sentence
:math:`s` (paraphrase) raised to a power :math:`\gamma`,

.. math::

    c_{\mathrm{sim}}(x) = \Big(\frac{1}{|s|} \sum_j \max_i \tfrac{1}{2}\big(1 + \cos(e_{x_i}, e_{s_j})\big)\Big)^{\gamma}

(every source word matched by its closest word of :math:`x` in the language model's input
embedding :math:`e`; in :math:`(0, 1]`), and a length tilt :math:`\lambda` per word. Scores are
log-probabilities in float64 throughout: a 50-word sentence's probability (below
:math:`10^{-100}`) would underflow float32, its logarithm does not.

References: N. Miao, H. Zhou, L. Mou, R. Yan, L. Li. CGMH: Constrained Sentence Generation by
Metropolis-Hastings Sampling. AAAI 2019.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyro
import torch

from fabula.data.text import BOS, EOS, PAD, UNK, TextBatch, TextVocab
from fabula.distributions import AutoregressiveSequence
from fabula.errors import SettingsError, UsageError
from fabula.models.capabilities import ExactLikelihood, GeneratesSentences
from fabula.models.rnnlm import RNNLM
from fabula.models.story import Story
from fabula.settings import COUNT

NO_WORD = -1
"""Padding of keyword and source tensors (no word id is negative)."""


@dataclass
class Constraints:
    """A batch of constraint sets, one per datum: ``keywords [B, M]`` and optional ``sources
    [B, S]`` (word ids, padded with :data:`NO_WORD`), and their ``index``."""

    keywords: torch.Tensor
    sources: torch.Tensor | None
    index: torch.Tensor

    @property
    def size(self) -> int:
        return self.keywords.shape[0]

    def to(self, device) -> Constraints:
        sources = None if self.sources is None else self.sources.to(device)
        return Constraints(self.keywords.to(device), sources, self.index.to(device))

    @classmethod
    def from_words(
        cls,
        vocab: TextVocab,
        keywords: Sequence[Sequence[str]],
        sources: Sequence[Sequence[str]] | None = None,
    ) -> Constraints:
        """Constraint sets from words: ``keywords[b]`` (may be empty only where a source is given)
        and ``sources[b]``; a word outside ``vocab`` is refused, naming it."""
        if sources is not None and len(sources) != len(keywords):
            raise SettingsError(f"{len(keywords)} keyword sets but {len(sources)} source sentences")
        if not keywords:
            raise SettingsError("no constraint sets given")

        def ids(words: Sequence[str], what: str) -> list[int]:
            unknown = [w for w in words if w not in vocab.index or vocab.index[w] <= UNK]
            if unknown:
                raise SettingsError(f"{what} {unknown[0]!r} is not a word of the language model's vocabulary")
            return [vocab.index[w] for w in words]

        keyword_ids = [ids(k, "keyword") for k in keywords]
        source_ids = None if sources is None else [ids(s, "source word") for s in sources]
        for b, k in enumerate(keyword_ids):
            if not k and (source_ids is None or not source_ids[b]):
                raise SettingsError(
                    "an empty keyword set constrains nothing: give keywords, or a source sentence to paraphrase"
                )
        return cls(
            padded(keyword_ids),
            None if source_ids is None else padded(source_ids),
            torch.arange(len(keywords)),
        )


def padded(rows: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
    """``[len(rows), width]`` word ids padded with :data:`NO_WORD` (width: the longest row)."""
    width = max([len(r) for r in rows] + [1]) if width is None else width
    out = torch.full((len(rows), width), NO_WORD, dtype=torch.long)
    for b, r in enumerate(rows):
        out[b, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out


def keywords_hold(
    tokens: torch.Tensor, lengths: torch.Tensor, keywords: torch.Tensor, ordered: bool
) -> torch.Tensor:
    """``[N]`` booleans: sentence ``tokens[n, :lengths[n]]`` holds each keyword of ``keywords[n]``
    (padded with :data:`NO_WORD`) as often as it is listed, as a subsequence in the listed order
    when ``ordered``."""
    valid_word = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]
    words = torch.where(valid_word, tokens, NO_WORD - 1)  # matches no keyword slot
    listed = keywords != NO_WORD
    if ordered:  # greedy subsequence matching, one position at a time
        matched = torch.zeros_like(lengths)
        wanted = listed.sum(-1)
        rows = torch.arange(len(tokens), device=tokens.device)
        for t in range(tokens.shape[1]):
            slot = keywords[rows, matched.clamp(max=keywords.shape[1] - 1)]
            matched = matched + ((matched < wanted) & (words[:, t] == slot)).long()
        return matched == wanted
    present = (words[:, :, None] == keywords[:, None, :]).sum(1)  # [N, M] occurrences in x
    needed = ((keywords[:, :, None] == keywords[:, None, :]) & listed[:, None, :]).sum(-1)
    return ((present >= needed) | ~listed).all(-1)


class ConstrainedSentences(Story):
    r""":math:`\pi(x) \propto p_{LM}(x) \prod_i c_i(x)\, e^{\lambda |x|}` (see the module) for each
    constraint set of a :class:`Constraints` batch, sentences of at most ``max_length`` words.

    ``model(constraints)`` is the Pyro form: ``"x"`` (``[B, max_length + 1]``, the words then
    ``<eos>`` and padding) drawn from the language model, with the constraints as a
    ``pyro.factor``; :meth:`log_target` scores token matrices directly, as a Metropolis-Hastings
    kernel over sentences (:class:`~fabula.inference.sequence_mh.SequenceMH`) needs.
    """

    latent_sites = ("x",)

    def __init__(
        self,
        lm,
        max_length: int = 30,
        ordered: bool = False,
        similarity_power: float = 0.0,
        length_weight: float = 0.0,
        allow_unk: bool = False,
    ):
        super().__init__()
        if not (isinstance(lm, ExactLikelihood) and isinstance(lm, GeneratesSentences)):
            raise UsageError(
                f"constrained sentences need a sentence story with an exact log-probability (an rnnlm run); "
                f"{type(lm).__name__} is not one"
            )
        if isinstance(lm, RNNLM) and lm.reverse:
            raise UsageError(
                "the language model of the target must read left to right (this one was trained --reverse)"
            )
        self.lm, self.max_length, self.ordered = lm, max_length, ordered
        self.similarity_power, self.length_weight, self.allow_unk = similarity_power, length_weight, allow_unk
        COUNT.check("max_length", max_length, int)
        self.vocab_size = lm.decoder.vocab_size

    def word_mask(self) -> torch.Tensor:
        """``[V]`` booleans: the word set :math:`W`."""
        mask = torch.ones(self.vocab_size, dtype=torch.bool, device=self.device)
        mask[[PAD, BOS, EOS]] = False
        mask[UNK] = self.allow_unk
        return mask

    def model(self, constraints: Constraints) -> None:
        steps = self.max_length + 1
        with self.data_plate(constraints):
            x = pyro.sample("x", AutoregressiveSequence(self.lm.decoder, None, steps, (constraints.size,)))
            eos = x == EOS
            ended = eos.any(-1)
            lengths = torch.where(ended, eos.long().argmax(-1), steps)
            log_c = self.log_constraints(x, lengths, constraints.keywords, constraints.sources)
            pyro.factor("constraints", torch.where(ended, log_c, -torch.inf))

    def log_constraints(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        keywords: torch.Tensor,
        sources: torch.Tensor | None,
    ) -> torch.Tensor:
        r"""``[N]`` float64: :math:`\log \prod_i c_i(x) + \lambda |x|` of sentences ``tokens [N, T]``
        of ``lengths [N]`` words, :math:`-\infty` outside the support (a keyword missing, a word
        outside :math:`W`, no word, more than ``max_length``); ``keywords``/``sources`` per row."""
        steps = torch.arange(tokens.shape[1], device=tokens.device)
        inside = steps < lengths[:, None]
        in_words = (self.word_mask()[tokens.clamp(min=0)] | ~inside).all(-1)
        ok = in_words & (lengths >= 1) & (lengths <= self.max_length)
        ok = ok & keywords_hold(tokens, lengths, keywords, self.ordered)
        score = self.length_weight * lengths.double()
        if sources is not None and self.similarity_power != 0:
            score = score + self.similarity_power * self.log_similarity(tokens, inside, sources)
        return torch.where(ok, score, -torch.inf)

    def log_similarity(
        self, tokens: torch.Tensor, inside: torch.Tensor, sources: torch.Tensor
    ) -> torch.Tensor:
        r"""``[N]``: :math:`\log \frac{1}{|s|}\sum_j \max_i \frac{1}{2}(1 + \cos(e_{x_i}, e_{s_j}))`,
        from a table of every word against each distinct source's words."""
        distinct, which = torch.unique(sources, dim=0, return_inverse=True)
        embed = torch.nn.functional.normalize(self.lm.decoder.embed.weight, dim=-1)
        table = (1 + embed @ embed[distinct.clamp(min=0)].transpose(1, 2)) / 2  # [U, V, S]
        match = table[which[:, None], tokens.clamp(min=0)]  # [N, T, S]
        best = torch.where(inside[:, :, None], match, 0.0).amax(1).double()
        listed = sources != NO_WORD
        return torch.log(torch.where(listed, best, 0.0).sum(-1) / listed.sum(-1))

    def log_lm(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 :math:`\\log p_{LM}(x)` of sentences ``tokens [N, T]`` of ``lengths`` words."""
        sentences = [row[:n].tolist() for row, n in zip(tokens, lengths.tolist(), strict=True)]
        batch = TextBatch.from_ids(sentences).to(tokens.device)
        return self.lm.log_prob(batch).double()

    def log_target(
        self,
        tokens: torch.Tensor,
        lengths: torch.Tensor,
        keywords: torch.Tensor,
        sources: torch.Tensor | None,
    ) -> torch.Tensor:
        r"""``[N]`` float64 :math:`\log \tilde\pi(x)` (unnormalised), :math:`-\infty` outside the support."""
        log_c = self.log_constraints(tokens, lengths, keywords, sources)
        safe = torch.where(lengths >= 1, lengths, 1)  # an empty sentence has no LM score to compute
        return torch.where(torch.isfinite(log_c), self.log_lm(tokens, safe) + log_c, -torch.inf)
