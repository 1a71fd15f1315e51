"""Decoding sentences from an autoregressive decoder: ancestral sampling, greedy and beam search,
and homotopies between latent codes (Bowman et al. 2016); and sampling documents from a
bag-of-words story."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fabula.data.text import BOS, EOS, PAD, UNK
from fabula.errors import SettingsError

#: The decoding rules of a sentence story: greedy, beam search, or sampling.
DECODERS = ("greedy", "beam", "sample")


def _never(logits: torch.Tensor) -> torch.Tensor:
    """``<pad>`` and ``<bos>`` are never generated."""
    logits = logits.clone()
    logits[..., [PAD, BOS]] = float("-inf")
    return logits


def categorical(logits: torch.Tensor) -> torch.Tensor:
    r"""One draw of :math:`\mathrm{Categorical}(\mathrm{softmax}(\ell))` per row of ``logits [..., V]``,
    by the inverse CDF: the first :math:`i` with :math:`\sum_{j \le i} p_j > u`, for one uniform
    :math:`u` per row (a word of zero probability is never drawn). At a vocabulary of 5,000 it
    costs a tenth of ``torch.distributions.Categorical(...).sample()``, whose CPU multinomial
    dominated roll-outs and temperature sweeps."""
    cdf = torch.softmax(logits, -1).cumsum(-1)
    u = torch.rand((*cdf.shape[:-1], 1), device=cdf.device, dtype=cdf.dtype) * cdf[..., -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)


def _strip(rows: torch.Tensor, max_length: int) -> list[list[int]]:
    """Word ids before ``<eos>``, at most ``max_length`` of them."""
    out = []
    for row in rows.tolist():
        out.append((row[: row.index(EOS)] if EOS in row else row)[:max_length])
    return out


@torch.no_grad()
def draw(
    decoder, z=None, num=None, steps=51, temperature=1.0, greedy=False, dropped=None, markers=False
) -> torch.Tensor:
    """``[N, steps]`` word ids decoded ancestrally (or, with ``greedy``, the most likely word at each
    step) for ``num`` sequences, or one per row of ``z``: each ends at its first ``<eos>`` and is
    ``<pad>`` after it; one without ``<eos>`` fills all ``steps``. ``dropped`` (``[N, steps]``
    booleans) marks the steps whose input word the decoder reads as ``<unk>`` (word dropout).
    ``<pad>`` and ``<bos>`` are never drawn unless ``markers``, which keeps the probability the
    decoder gives them: the draws are then exactly from the decoder's distribution."""
    n = z.shape[0] if z is not None else num
    device = decoder.embed.weight.device
    tokens = torch.full((n, 1), BOS, dtype=torch.long, device=device)
    state, out = decoder.start(z, n), []
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for t in range(steps):
        inputs = tokens if dropped is None else torch.where(dropped[:, t, None], UNK, tokens)
        hidden, state = decoder.step(inputs, state, z)
        logits = decoder.out.log_probs(hidden[:, -1])
        logits = logits if markers else _never(logits)
        if greedy:
            tokens = logits.argmax(-1, keepdim=True)
        else:
            tokens = categorical(logits / temperature)[:, None]
        tokens = torch.where(done[:, None], PAD, tokens)
        out.append(tokens)
        done |= tokens[:, 0] == EOS
        if done.all():
            break
    out = torch.cat(out, 1)
    return F.pad(out, (0, steps - out.shape[1]), value=PAD)


def sample(decoder, z=None, num=None, max_length=50, temperature=1.0, greedy=False) -> list[list[int]]:
    """Ancestral sampling (or, with ``greedy``, the most likely word at each step) of ``num``
    sentences, or one per row of ``z``. Sentences end at ``<eos>`` or after ``max_length`` words."""
    return _strip(draw(decoder, z, num, max_length + 1, temperature, greedy), max_length)


def greedy(decoder, z=None, num=None, max_length=50) -> list[list[int]]:
    """The most likely word at each step."""
    return sample(decoder, z, num, max_length, greedy=True)


@torch.no_grad()
def beam_search(decoder, z=None, num=None, beam_size=5, max_length=50) -> list[list[int]]:
    r"""The highest-scoring sentence of a beam of ``beam_size`` hypotheses, scored by
    :math:`\log p(w_{1:n}, \langle eos\rangle \mid z)` (no length normalisation). Finished
    hypotheses keep their score. With ``beam_size=1`` this is :func:`greedy`."""
    n = z.shape[0] if z is not None else num
    k = beam_size
    device = decoder.embed.weight.device
    zk = z.repeat_interleave(k, 0) if z is not None else None
    state = decoder.start(zk, n * k)
    tokens = torch.full((n * k, 1), BOS, dtype=torch.long, device=device)
    score = torch.full((n, k), float("-inf"), device=device)
    score[:, 0] = 0.0  # one live hypothesis at first, so the beams do not start as copies
    done = torch.zeros(n * k, dtype=torch.bool, device=device)
    history = torch.zeros(n * k, 0, dtype=torch.long, device=device)
    for _ in range(max_length + 1):
        hidden, state = decoder.step(tokens, state, zk)
        logp = torch.log_softmax(_never(decoder.out.log_probs(hidden[:, -1])), -1)
        # a finished hypothesis extends only by <pad>, at no cost
        finished_row = torch.full_like(logp, float("-inf"))
        finished_row[:, PAD] = 0.0
        logp = torch.where(done[:, None], finished_row, logp)
        V = logp.shape[-1]
        cand = (score.reshape(-1, 1) + logp).reshape(n, k * V)
        score, idx = cand.topk(k, dim=-1)
        parent = (idx // V + torch.arange(n, device=device)[:, None] * k).reshape(-1)
        tokens = (idx % V).reshape(-1, 1)
        history = torch.cat([history[parent], tokens], 1)
        done = done[parent] | (tokens[:, 0] == EOS)
        state = tuple(s[:, parent] for s in state) if state is not None else None
        if done.all():
            break
    best = score.argmax(-1) + torch.arange(n, device=device) * k
    return _strip(history[best], max_length)


def decode(decoder, z=None, num=None, method="greedy", beam_size=5, max_length=50, temperature=1.0):
    """Dispatch to :func:`greedy`, :func:`beam_search` or :func:`sample` by name."""
    if method == "greedy":
        return greedy(decoder, z, num, max_length)
    if method == "beam":
        return beam_search(decoder, z, num, beam_size, max_length)
    if method == "sample":
        return sample(decoder, z, num, max_length, temperature)
    raise SettingsError(f"unknown decoding method {method!r}; choose from {DECODERS}")


@torch.no_grad()
def sample_documents(story, lengths: torch.Tensor, max_words: int = 50) -> list[list[tuple[int, int]]]:
    """Documents of the given ``lengths`` drawn from a bag-of-words story's prior
    (:class:`~fabula.models.capabilities.GeneratesDocuments`): each one's ``(word id, count)``
    pairs, most frequent first, at most ``max_words`` of them."""
    counts = story.generate(lengths)
    top = counts.topk(min(max_words, counts.shape[-1]), dim=-1)
    return [
        [(i, c) for i, c in zip(ids, values, strict=True) if c > 0]
        for ids, values in zip(top.indices.tolist(), top.values.long().tolist(), strict=True)
    ]


def homotopy(z_a: torch.Tensor, z_b: torch.Tensor, steps: int) -> torch.Tensor:
    r"""Codes on the segment :math:`z_t = (1-t) z_a + t z_b`, ``t`` in ``steps`` equal steps from 0 to 1."""
    t = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
    return (1 - t) * z_a + t * z_b
