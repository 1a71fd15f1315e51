r"""Annealed importance sampling of an undirected story's log partition function, per document length.

AIS (Neal 2001) estimates a ratio of normalisers :math:`Z_K / Z_0` by a chain of distributions
:math:`p_0, \dots, p_K`: each run draws :math:`x_0 \sim p_0`, then :math:`x_k \sim T_k(\cdot \mid
x_{k-1})`, a transition that leaves :math:`p_k` invariant, and weighs itself by
:math:`\log w = \sum_k \log \tilde p_k(x_{k-1}) - \log \tilde p_{k-1}(x_{k-1})`;
:math:`\hat Z_K = Z_0 \frac1R \sum_r w_r` is unbiased, :math:`\log \hat Z_K` biased low
(Jensen), so a perplexity from it is biased optimistic. Its standard error is the delta
method's, :math:`\mathrm{sd}(w) / (\sqrt R\, \bar w)`, and the effective number of runs
:math:`(\sum_r w_r)^2 / \sum_r w_r^2` says whether the runs agree: near 1, one run carries the
estimate and both it and its standard error are unreliable, typically because the runs missed
a mode that the one found. Two paths:

* **Along the length** (:func:`length_log_partition`, for a
  :class:`~fabula.models.capabilities.LengthTempered` story): the hidden units' marginal of a
  document of :math:`t` words is :math:`\tilde p_t(h) = e^{t g(h)}`, so the lengths themselves
  are the path, from the uniform :math:`p_0` (:math:`Z_0 = 2^F`) to the longest document, and
  one run gives :math:`\log \hat Z_t` at every integer :math:`t` on the way. The steps are
  :math:`\log w \mathrel{+}= (t_k - t_{k-1})\, g(h)`, the transition a sweep of single-unit Gibbs
  updates, :math:`p_t(h_j = 1 \mid h_{-j}) = \sigma(t\,(g(h^{j=1}) - g(h^{j=0})))`. Between
  lengths the path is continuous (:math:`t` need not be an integer): :func:`length_grid` steps
  geometrically, ``steps`` sweeps per e-fold of length, and reads every integer on the way. The base is the exact
  uniform distribution, and each length's figure is the prefix of one annealing, so documents
  of every length are scored by the same runs (their errors are correlated).
* **Along the inverse temperature** (:func:`log_partition`, any
  :class:`~fabula.models.capabilities.Undirected` story; Salakhutdinov & Murray 2008): from the
  base-rate model at :math:`\beta = 0` to the story at :math:`\beta = 1`, one annealing per
  length, a Gibbs step over :math:`(h, v)` per temperature. On long documents its runs can miss
  the modes that dominate :math:`p_D`.

Where the story's hidden marginal is tractable
(:class:`~fabula.models.capabilities.HiddenMarginal`), :func:`best_hidden_state` bounds
:math:`\log Z_D \ge D \max_h g(h)` without sampling, which catches a missed mode even when the
runs agree. Written by hand: no library provides AIS for these stories.

References: R. Neal. Annealed Importance Sampling. Statistics and Computing 2001.
R. Salakhutdinov, I. Murray. On the Quantitative Analysis of Deep Belief Networks. ICML 2008.
R. Salakhutdinov, G. Hinton. Replicated Softmax: an Undirected Topic Model. NIPS 2009.
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


MAX_EXACT_UNITS = 62
"""The most hidden units whose states :class:`LengthAnnealing` codes as int64, for its known modes."""


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
    found = []
    for group in _chunks(sorted(int(d) for d in lengths), runs, story.vocab_size, max_elements):
        chain_lengths = torch.tensor(group, device=device).repeat_interleave(runs)
        state = np.random.SeedSequence([seed, *group]).generate_state(1)[0]
        with preserved_rng(device):
            torch.manual_seed(int(state))
            logw = _anneal(
                story, chain_lengths.to(torch.get_default_dtype()), betas, progress, len(group), runs
            )
        base = story.base_log_partition(torch.tensor(group, device=device))
        found.append(summarise(logw.reshape(len(group), runs), base))
    return LogPartition(*(torch.cat(parts) for parts in zip(*found, strict=True)))


def summarise(logw: torch.Tensor, log_z0: torch.Tensor | float) -> LogPartition:
    r""":math:`\log \hat Z = \log Z_0 + \log \frac1R \sum_r w_r`, its standard error and the
    effective runs from log-weights ``[..., R]`` (float64); refuses a non-finite estimate
    (:class:`~fabula.errors.DivergenceError`)."""
    top = logw.max(-1, keepdim=True).values
    w = (logw - top).exp()
    mean = w.mean(-1)
    log_z = log_z0 + top.squeeze(-1) + mean.log()
    se = w.std(-1) / (math.sqrt(logw.shape[-1]) * mean)
    if not (torch.isfinite(log_z).all() and torch.isfinite(se).all()):
        raise DivergenceError("AIS gave a non-finite log partition function (weights overflowed)")
    return LogPartition(log_z, se, w.sum(-1) ** 2 / w.pow(2).sum(-1))


@torch.no_grad()
def local_maxima(story, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The local maxima of :math:`g(h) = \log \tilde p_1(h)` (so :math:`\log \tilde p_D = D g`)
    that coordinate ascent reaches from the binary states ``starts`` (``[N, F]``), and their
    :math:`g` (float64): flip any unit that raises :math:`g`, one unit at a time for all starts at
    once, until none does."""
    h = starts.double().clone()
    g = story.hidden_log_marginal(h, 1.0)
    active = torch.ones(len(h), dtype=torch.bool, device=h.device)  # starts that moved in the last pass
    while bool(active.any()):
        rows, moved = active.nonzero().squeeze(-1), torch.zeros_like(active)
        for j in range(h.shape[-1]):
            flipped = h[rows].clone()
            flipped[:, j] = 1 - flipped[:, j]
            g_flipped = story.hidden_log_marginal(flipped, 1.0)
            better = g_flipped > g[rows]
            h[rows[better]], g[rows[better]] = flipped[better], g_flipped[better]
            moved[rows[better]] = True
        active = moved
    return h, g


def best_hidden_state(story, starts: torch.Tensor) -> float:
    r""":math:`\max_h g(h)` over the :func:`local_maxima` reached from ``starts``."""
    return float(local_maxima(story, starts)[1].max())


@torch.no_grad()
def word_states(story) -> torch.Tensor:
    r"""For a :class:`~fabula.models.capabilities.LengthTempered` story, one binary state per word
    :math:`k`: the units that favour it, :math:`h_j = [W_{jk} + a_j > 0]` (``[V, F]``). Near them
    :math:`g` is high because one word takes most of the softmax (documents of one repeated
    word): narrow modes that dominate :math:`p_D(h)` for long documents and that random starts
    rarely reach."""
    a, _, W = story.length_potential()
    return ((W + a[:, None]) > 0).T.double()


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


def length_grid(steps: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The lengths :math:`0 = t_0 < t_1 < \dots` that :func:`length_log_partition` anneals
    through up to ``longest`` (float64), and which of them take a Gibbs sweep (bool): a geometric
    ladder with ratio :math:`1 + 1/S` from :math:`1/S` words (:math:`S` = ``steps``, so :math:`S`
    points per e-fold of length, a sweep at each) joined with every integer length (where the
    estimates are read; a sweep at each below :math:`S` words, none above, where the ladder is
    sparser than the integers: an identity transition leaves every :math:`p_t` invariant). The
    grid does not depend on ``longest`` beyond where it stops, so one annealing's figure for a
    length is the same whatever the longest length is."""
    if not (isinstance(steps, int) and steps >= 1):
        raise SettingsError(f"AIS along the length needs steps >= 1, got {steps!r}")
    ratio = math.log1p(1 / steps)
    low = math.ceil(math.log(steps * steps) / ratio)  # the ladder's rungs below S words
    high = math.floor(math.log(max(longest, 1) / steps) / ratio) if longest > steps else 0
    ladder = steps * torch.exp(ratio * torch.arange(-low, high + 1, dtype=torch.float64))
    ladder = ladder[ladder <= longest]
    integers = torch.arange(0, longest + 1, dtype=torch.float64)
    grid = torch.unique(torch.cat([ladder, integers]))  # sorted
    return grid, torch.isin(grid, ladder) | (grid <= steps)


class LengthAnnealing:
    r"""Runs of AIS along the document length for a
    :class:`~fabula.models.capabilities.LengthTempered` story (see the module's text), kept so
    that a longer length continues them: :meth:`log_partition` anneals on to the longest length
    asked for and answers every length from the figures recorded at each integer on the way.

    **Known modes, summed exactly.** A set :math:`B` of hidden states (``modes`` and every state
    one unit away from one of them) is summed exactly at every length,
    :math:`Z^B_t = \sum_{h \in B} e^{t g(h)}`, and the runs anneal the rest,
    :math:`p_t` restricted to :math:`h \notin B` (:math:`Z_0 = 2^F - |B|`; a unit's update that
    would enter :math:`B` keeps its value), so :math:`\hat Z_t = Z^B_t + \hat Z^{\bar B}_t` is
    unbiased as before. Narrow modes of high :math:`g` (:func:`word_states`) take over
    :math:`p_t` only at large :math:`t`, where no local move reaches them in time; summed exactly
    they cannot be missed. The standard error and effective runs are those of the annealed part,
    the error scaled by its share of :math:`\hat Z_t`.

    ``runs`` chains of the :math:`F` hidden units start uniform; at each point of
    :func:`length_grid` ``(steps)`` each run adds :math:`(t_k - t_{k-1}) g(h)` to its log-weight
    and, at the points of the ladder, takes one sweep of single-unit Gibbs updates under
    :math:`p_{t_k}`. A sweep keeps
    :math:`e^{b + W^\top h - c}` per run (float32) and updates the runs whose unit flipped by that
    unit's row, so a unit costs one product with :math:`(e^{W_j}, e^{-W_j})`; the terms are
    recomputed exactly after every sweep, and :math:`g` is float64. The draws come from a
    generator seeded with ``seed`` (the caller's random stream is untouched)."""

    def __init__(
        self,
        story,
        runs: int = 100,
        steps: int = 100,
        seed: int = 0,
        modes: torch.Tensor | None = None,
        progress: bool | None = None,
    ):
        if not (isinstance(runs, int) and runs >= 2):
            raise SettingsError(f"AIS needs at least 2 runs (for its standard error), got {runs!r}")
        length_grid(steps, 0)  # refuses a bad count
        a, b, W = (p.detach().double() for p in story.length_potential())
        F = len(a)
        self.runs, self.steps, self.progress = runs, steps, progress
        self.a, self.b, self.W = a, b, W
        self.pair = torch.stack([W.exp(), (-W).exp()], -1).float()  # [F, V, 2]: e^{W_j}, e^{-W_j}
        self.generator = torch.Generator(device=W.device).manual_seed(seed)
        self.bits = 2 ** torch.arange(F, device=W.device)
        self.known, self.known_g = self._neighbourhood(modes)
        self.h = self._uniform_outside(runs)
        self.logw = torch.zeros(runs, dtype=torch.float64, device=W.device)
        self.log_z0 = F * math.log(2.0) + math.log1p(-len(self.known) / 2.0**F)
        self.done = 0  # points of the grid passed
        self.found: list[LogPartition] = [self._summary(0.0)]  # per integer length

    def _neighbourhood(self, modes):
        """The codes (sorted, int64) and :math:`g` of the known states: ``modes`` and their
        one-unit neighbours."""
        F = len(self.a)
        if modes is None or len(modes) == 0:
            return torch.zeros(0, dtype=torch.long, device=self.W.device), torch.zeros(0, dtype=torch.float64)
        if F > MAX_EXACT_UNITS:
            raise SettingsError(
                f"exact modes need at most {MAX_EXACT_UNITS} hidden units (int64 codes), the story has {F}"
            )
        modes = modes.to(self.W.device).double()
        flips = torch.cat(
            [
                torch.zeros(1, F, dtype=torch.float64, device=modes.device),
                torch.eye(F, dtype=torch.float64, device=modes.device),
            ]
        )
        states = (modes[:, None, :] - flips[None]).abs().reshape(-1, F)  # each mode and its neighbours
        codes = torch.unique(self._codes(states))
        states = ((codes[:, None] // self.bits) % 2).double()
        return codes, self.g(states)

    def _codes(self, h: torch.Tensor) -> torch.Tensor:
        return (h.long() * self.bits).sum(-1)

    def _is_known(self, codes: torch.Tensor) -> torch.Tensor:
        at = torch.searchsorted(self.known, codes).clamp(max=len(self.known) - 1)
        return self.known[at] == codes

    def _uniform_outside(self, num: int) -> torch.Tensor:
        """``num`` uniform draws of the states outside the known ones."""
        h = torch.empty(num, len(self.a), dtype=torch.float64, device=self.W.device)
        todo = torch.ones(num, dtype=torch.bool, device=h.device)
        while bool(todo.any()):
            h[todo] = torch.bernoulli(torch.full_like(h[todo], 0.5), generator=self.generator)
            todo = self._is_known(self._codes(h)) if len(self.known) else torch.zeros_like(todo)
        return h

    def g(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`g(h) = a \cdot h + \log \sum_k e^{b_k + (W^\top h)_k}`, ``[...]``."""
        return h @ self.a + torch.logsumexp(self.b + h @ self.W, -1)

    def _summary(self, t: float) -> LogPartition:
        rest = summarise(self.logw[None], self.log_z0)
        if not len(self.known):
            return rest
        exact = torch.logsumexp(t * self.known_g, 0, keepdim=True)
        log_z = torch.logaddexp(exact, rest.log_z)
        return LogPartition(log_z, rest.se * (rest.log_z - log_z).exp(), rest.ess)

    def _sweep(self, t: float) -> None:
        h = self.h
        x = self.b + h @ self.W
        scaled = (x - x.max(-1, keepdim=True).values).exp().float()  # [R, V]
        log_sum = scaled.sum(-1).log()
        codes = self._codes(h)
        for j in range(h.shape[-1]):
            on = h[:, j] == 1
            other = (scaled @ self.pair[j]).log()  # [R, 2]: the sums with unit j turned on / off
            flipped = torch.where(on, other[:, 1], other[:, 0])
            gain = torch.where(on, log_sum - flipped, flipped - log_sum)  # log sum at h_j=1 minus at h_j=0
            new = torch.bernoulli(torch.sigmoid(t * (self.a[j] + gain.double())), generator=self.generator)
            flip = new != h[:, j]
            if len(self.known):
                flip &= ~self._is_known(codes ^ int(self.bits[j]))  # never into the known states
            rows = flip.nonzero().squeeze(-1)
            if len(rows):
                scaled[rows] *= torch.where(on[rows, None], self.pair[j, :, 1], self.pair[j, :, 0])
                log_sum[rows] = flipped[rows]
                h[rows, j] = 1 - h[rows, j]
                codes[rows] ^= int(self.bits[j])

    @torch.no_grad()
    def log_partition(self, lengths) -> LogPartition:
        r""":math:`\log \hat Z_D`, its standard error and effective runs for each of ``lengths``
        (integers >= 0), annealing on to the longest first."""
        wanted = torch.as_tensor(lengths).long().reshape(-1)
        if len(wanted) and int(wanted.min()) < 0:
            raise SettingsError("document lengths must be >= 0")
        longest = int(wanted.max()) if len(wanted) else 0
        if longest >= len(self.found):
            grid, sweeps = length_grid(self.steps, longest)
            grid, sweeps = grid.tolist(), sweeps.tolist()
            bar = tqdm(
                range(self.done + 1, len(grid)),
                desc=f"AIS along the length: {self.runs} runs to {longest} words",
                disable=None if self.progress is None else not self.progress,
                leave=False,
            )
            g = self.g(self.h)
            for k in bar:
                t = grid[k]
                self.logw += (t - grid[k - 1]) * g
                if t == int(t):
                    self.found.append(self._summary(t))
                if sweeps[k]:
                    self._sweep(t)
                    g = self.g(self.h)
            self.done = len(grid) - 1
        index = wanted.tolist()
        return LogPartition(*(torch.cat([self.found[d][i] for d in index]) for i in range(3)))


def length_log_partition(
    story, lengths, runs: int = 100, steps: int = 100, seed: int = 0, modes=None, progress=None
):
    r""":math:`\log \hat Z_D`, its standard error and effective runs for each of ``lengths``, from
    ``runs`` runs of AIS along the length (:class:`LengthAnnealing`)."""
    return LengthAnnealing(story, runs, steps, seed, modes, progress).log_partition(lengths)
