r"""Annealed importance sampling of an undirected story's log partition function, per document length.

For a story of the :class:`~fabula.models.capabilities.Undirected` family
:math:`p_\beta(v) \propto e^{-F_\beta(v)}` (:math:`\beta = 0` a tractable base, :math:`\beta = 1`
the story) and temperatures :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1`, each run draws
:math:`v_1 \sim p_0` and :math:`v_{k+1} \sim T_k(\cdot \mid v_k)`, a Gibbs step
(:math:`h \sim p_{\beta_k}(h \mid v)`, :math:`v \sim p_{\beta_k}(v \mid h)`) that leaves
:math:`p_{\beta_k}` invariant, and weighs itself by

.. math:: \log w = \sum_{k=1}^{K} F_{\beta_{k-1}}(v_k) - F_{\beta_k}(v_k),
          \qquad \hat Z_D = Z_0 \, \frac1R \sum_{r=1}^R w_r,

an unbiased estimate of :math:`Z_D`; :math:`\log \hat Z_D` is biased low (Jensen), so a
perplexity from it is biased optimistic. Its standard error is the delta method's,
:math:`\mathrm{sd}(w) / (\sqrt R\, \bar w)`, and the effective number of runs
:math:`(\sum_r w_r)^2 / \sum_r w_r^2` says whether the runs agree: near 1, one run carries the
estimate and both it and its standard error (then near 1) are unreliable, typically because the
runs missed a mode of :math:`p_D` that the one found (more temperatures, or another path, are
needed). Where the story's hidden marginal is tractable
(:class:`~fabula.models.capabilities.HiddenMarginal`), :func:`best_hidden_state` bounds
:math:`\log Z_D \ge D \max_h g(h)` without sampling, which catches such a miss even when the
runs agree. Runs and lengths are one batch of chains (in chunks
that bound memory); the temperatures run one after another. Written by hand: no library
provides AIS for these stories.

References: R. Neal. Annealed Importance Sampling. Statistics and Computing 2001.
R. Salakhutdinov, I. Murray. On the Quantitative Analysis of Deep Belief Networks. ICML 2008.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from fabula.checkpoint import preserved_rng
from fabula.errors import DivergenceError, SettingsError

SCHEDULE = ((0.5, 500), (0.9, 4_000), (1.0, 10_000))
"""Salakhutdinov & Murray (2008)'s 14,500 temperatures: ``(end, count)`` of each uniformly spaced
segment, from 0."""


def temperatures(num: int) -> torch.Tensor:
    r"""``num + 1`` inverse temperatures from 0 to 1 (float64): :data:`SCHEDULE`'s three uniform
    segments, :math:`[0, 0.5)`, :math:`[0.5, 0.9)`, :math:`[0.9, 1]`, with their shares of
    ``num`` (at least one each; ``num = 14500`` is the published schedule)."""
    if not (isinstance(num, int) and num >= len(SCHEDULE)):
        raise SettingsError(f"AIS needs at least {len(SCHEDULE)} temperatures, got {num!r}")
    total = sum(n for _, n in SCHEDULE)
    counts = [max(1, round(num * n / total)) for _, n in SCHEDULE[:-1]]
    counts.append(num - sum(counts))
    start, pieces = 0.0, []
    for (end, _), n in zip(SCHEDULE, counts, strict=True):
        pieces.append(torch.linspace(start, end, n + 1, dtype=torch.float64)[:-1])
        start = end
    return torch.cat([*pieces, torch.ones(1, dtype=torch.float64)])


class LogPartition(NamedTuple):
    r"""Per length (float64, ``[L]`` each): :math:`\log \hat Z_D`, its standard error and the
    effective number of runs."""

    log_z: torch.Tensor
    se: torch.Tensor
    ess: torch.Tensor


def _chunks(lengths: list[int], runs: int, width: int, max_elements: int):
    """Consecutive groups of the (sorted) ``lengths`` whose ``runs`` chains each hold
    about ``runs * n * (width + longest)`` elements, at most ``max_elements`` (one length at least)."""
    group: list[int] = []
    for length in lengths:
        if group and runs * (len(group) + 1) * (width + length) > max_elements:
            yield group
            group = []
        group.append(length)
    if group:
        yield group


@torch.no_grad()
def log_partition(
    story,
    lengths,
    runs: int = 100,
    betas: torch.Tensor | None = None,
    seed: int = 0,
    max_elements: int = 2**24,
    progress: bool | None = None,
) -> LogPartition:
    r""":math:`\log \hat Z_D`, its standard error and effective runs for the distinct ``lengths``
    (sorted), with ``runs`` runs each over ``betas`` (default
    :func:`temperatures` ``(14500)``). Each chunk of lengths draws from torch's generator seeded by
    ``seed`` and its lengths (the caller's stream is left as it was), so the same lengths
    computed together give the same figures. ``progress``: a bar over the temperatures (``None``:
    where the output is a terminal). A non-finite estimate raises
    :class:`~fabula.errors.DivergenceError`."""
    betas = temperatures(14_500) if betas is None else betas.to(torch.float64)
    if not (isinstance(runs, int) and runs >= 2):
        raise SettingsError(f"AIS needs at least 2 runs (for its standard error), got {runs!r}")
    if betas[0] != 0 or betas[-1] != 1 or not bool((betas.diff() > 0).all()):
        raise SettingsError("AIS temperatures must rise strictly from 0 to 1")
    device = story.device
    log_z, se, ess = [], [], []
    for group in _chunks(sorted(int(d) for d in lengths), runs, story.vocab_size, max_elements):
        chain_lengths = torch.tensor(group, device=device).repeat_interleave(runs)
        state = np.random.SeedSequence([seed, *group]).generate_state(1)[0]
        with preserved_rng(device):
            torch.manual_seed(int(state))
            logw = _anneal(
                story, chain_lengths.to(torch.get_default_dtype()), betas, progress, len(group), runs
            )
        logw = logw.reshape(len(group), runs)
        top = logw.max(-1, keepdim=True).values
        w = (logw - top).exp()
        mean = w.mean(-1)
        base = story.base_log_partition(torch.tensor(group, device=device))
        log_z.append(base + top.squeeze(-1) + mean.log())
        se.append(w.std(-1) / (math.sqrt(runs) * mean))
        ess.append(w.sum(-1) ** 2 / w.pow(2).sum(-1))
    log_z, se = torch.cat(log_z), torch.cat(se)
    if not (torch.isfinite(log_z).all() and torch.isfinite(se).all()):
        raise DivergenceError("AIS gave a non-finite log partition function (weights overflowed)")
    return LogPartition(log_z, se, torch.cat(ess))


@torch.no_grad()
def best_hidden_state(story, starts: torch.Tensor) -> float:
    r""":math:`\max_h g(h)`, :math:`g(h) = \log \tilde p_1(h)` (so :math:`\log \tilde p_D = D g`),
    as found by coordinate ascent from the binary states ``starts`` (``[N, F]``): flip any unit that
    raises :math:`g`, one unit at a time for all starts at once, until none does."""
    h = starts.double()
    g = story.hidden_log_marginal(h, 1.0)
    changed = True
    while changed:
        changed = False
        for j in range(h.shape[-1]):
            flipped = h.clone()
            flipped[:, j] = 1 - flipped[:, j]
            g_flipped = story.hidden_log_marginal(flipped, 1.0)
            better = g_flipped > g
            if bool(better.any()):
                changed = True
                h, g = torch.where(better[:, None], flipped, h), torch.where(better, g_flipped, g)
    return float(g.max())


def _anneal(story, lengths, betas, progress, num_lengths, runs) -> torch.Tensor:
    """The log-weights ``[C]`` of one chain per entry of ``lengths``."""
    chains = len(lengths)
    h = story.hidden_given_visible(torch.zeros(chains, story.vocab_size, device=lengths.device), 0.0).sample()
    v = story.visible_given_hidden(h, lengths, 0.0).sample()  # a draw of the base
    logw = torch.zeros(chains, dtype=torch.float64, device=lengths.device)
    K, values = len(betas) - 1, betas.tolist()
    betas = betas.to(lengths.device)
    bar = tqdm(
        range(1, K + 1),
        desc=f"AIS: {num_lengths} lengths x {runs} runs",
        disable=None if progress is None else not progress,
        leave=False,
    )
    for k in bar:
        energies = story.free_energy(v, betas[k - 1 : k + 1])  # [2, C]
        logw += energies[0] - energies[1]
        if k < K:
            beta = values[k]
            h = story.hidden_given_visible(v, beta).sample()
            v = story.visible_given_hidden(h, lengths, beta).sample()
    return logw
