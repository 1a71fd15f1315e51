r"""Metropolis-Hastings over token sequences: CGMH's word edits as an exact MCMC kernel.

The state is a sentence :math:`x = x_1 .. x_n`; the target :math:`\pi` is a
:class:`~fabula.models.constrained.ConstrainedSentences`. One transition (all chains at once):

1. a move :math:`m` with probabilities :math:`(p_r, p_i, p_d)` (replace, insert, delete), and a
   position uniformly: :math:`i \in 0..n-1` to replace or delete word :math:`x_i`,
   :math:`i \in 0..n` to insert before it;
2. the context :math:`(L, R)`: :math:`L = x_{<i}` and :math:`R = x_{>i}` (replace, delete) or
   :math:`R = x_{\ge i}` (insert), and its candidate set :math:`S(L, R)`: the whole word set, or
   the ``top_k`` words of :math:`\log p_{fwd}(w \mid L) + \log p_{bwd}(w \mid R)` (the forward LM
   alone without a backward one). :math:`S` depends on the context only, which a move and its
   reverse share;
3. a word :math:`w \in S` with :math:`q(w) = \pi(L\,w\,R) / Z`, :math:`Z = \sum_{v \in S}
   \pi(L\,v\,R)`, all candidates scored in one batched LM computation (the prefix :math:`L` read
   once, the candidate suffixes :math:`w\,R` batched from its state); a delete proposes
   :math:`L\,R`;
4. acceptance :math:`\min\{1, \pi(x')\, g(x \mid x') / (\pi(x)\, g(x' \mid x))\}` with every
   proposal probability in :math:`g`: a replace and its reverse have
   :math:`g = p_r \frac{1}{n} q(\cdot)` (so the ratio is 1 when :math:`x_i \in S` and 0 when it is
   not: the reverse move cannot propose it); an insert :math:`g(x' \mid x) = p_i \frac{1}{n+1}
   q(w)` is reversed by a delete, :math:`g(x \mid x') = p_d \frac{1}{n+1}`; a delete
   :math:`g(x' \mid x) = p_d \frac1n` by an insert, :math:`g(x \mid x') = p_i \frac1n q(x_i)`, zero
   when :math:`x_i \notin S`. A proposal outside the support (a keyword deleted, more than
   ``max_length`` words, an empty sentence) has :math:`\pi(x') = 0` and is rejected; a move
   whose candidates are all outside it leaves the state as it is.

Every probability comes from the language models' output layers exactly (their normalised
:meth:`~fabula.nn.output.OutputLayer.log_prob` of the candidates' words, and
:meth:`~fabula.nn.output.OutputLayer.log_probs` to rank them): a factored layer (``--output
class`` or ``adaptive``) cuts the cost of scoring the candidates and leaves the ratio exact.

The kernel satisfies detailed balance, :math:`\pi(x) T(x' \mid x) = \pi(x') T(x \mid x')`
(``tests/test_cgmh.py`` builds its transition matrix on an enumerable sentence space and checks
it to float64 precision). ``rules="released"`` runs instead the rules of CGMH's released code
(``key_gen.py``) as far as they differ from that: the replacement drawn from :math:`q` is always
kept (a Gibbs step over :math:`S`, with no ratio, so not reversible when :math:`x_i \notin S`);
insertion scores are multiplied by :math:`10/(n+1)` (its ``sample_prior``), in :math:`q` and in
the ratio; and every move also needs :math:`\pi(x') > \tau \pi(x)`, :math:`\tau` alternating
between 0 and 0.5 every ten steps. These rules do not leave :math:`\pi` invariant (the same test
shows it). Unlike that code, scores stay in log space, positions are random (it sweeps them in
turn), and the keywords are kept by the target's hard constraint (it freezes their positions).

With a top-k candidate set the kernel still leaves :math:`\pi` invariant, but it need not reach
every sentence: one whose word no context ranks among its top k is never proposed.

:class:`SequenceMH` samples (every kept state is a draw); :func:`anneal` is the separate search
mode, simulated annealing of :math:`\pi` returning the best sentence it visits.

References: N. Miao, H. Zhou, L. Mou, R. Yan, L. Li. CGMH: Constrained Sentence Generation by
Metropolis-Hastings Sampling. AAAI 2019. W. K. Hastings. Monte Carlo Sampling Methods Using
Markov Chains and Their Applications. Biometrika 1970. P. J. Green. Reversible jump Markov chain
Monte Carlo computation and Bayesian model determination. Biometrika 1995.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from tqdm.auto import tqdm

from fabula.data.text import BOS, EOS, PAD
from fabula.errors import SettingsError, UsageError
from fabula.inference.kernels import Chains, Kernel, seeded
from fabula.models.constrained import NO_WORD, ConstrainedSentences, Constraints, keywords_hold, padded
from fabula.models.rnnlm import RNNLM
from fabula.settings import COUNT, PROBABILITY

#: The codes of the three word edits a proposal makes.
REPLACE, INSERT, DELETE = 0, 1, 2
#: The names of the word edits, in the order of their codes.
MOVES = ("replace", "insert", "delete")
#: The acceptance rules: the exact Metropolis-Hastings ratio, or the released code's.
RULES = ("exact", "released")


@dataclass
class SentenceState:
    """Chains ``[N]`` (chain ``c`` of datum ``b`` is row ``c * B + b``): ``tokens [N, max_length +
    1]`` (words, then :data:`NO_WORD`), ``lengths``, ``log_pi`` (float64) and each row's
    ``keywords``/``sources``; ``step`` counts transitions (the released rules' threshold cycles
    with it)."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    log_pi: torch.Tensor
    keywords: torch.Tensor
    sources: torch.Tensor | None
    step: int = 0


@dataclass
class Outcomes:
    """What one move at one position can lead to, per chain, ``K + 1`` outcomes (the ``K``
    candidates, then the deletion): the sentences ``tokens [N, K + 1, T]``, ``lengths``, their
    ``log_pi``, the log-probability ``log_q`` of proposing each given the move and position, and
    the log acceptance ratio ``log_alpha`` of each."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    log_pi: torch.Tensor
    log_q: torch.Tensor
    log_alpha: torch.Tensor


def _shift(tokens: torch.Tensor, start: torch.Tensor, length: torch.Tensor, width: int) -> torch.Tensor:
    """``[N, width]``: ``tokens[n, start[n] : start[n] + length[n]]``, padded with :data:`NO_WORD`."""
    steps = torch.arange(width, device=tokens.device)
    source = (start[:, None] + steps).clamp(max=tokens.shape[1] - 1)
    return torch.where(steps < length[:, None], tokens.gather(1, source), NO_WORD)


def _read(decoder, words: torch.Tensor, lengths: torch.Tensor):
    """An LSTM decoder read over ``<bos> words[n, :lengths[n]]``: its output states
    ``[N, 1 + W, H]`` at every step (the first ``lengths + 1`` meaningful) and the state after
    the last word."""
    inputs = torch.cat([torch.full_like(words[:, :1], BOS), words.clamp(min=PAD)], 1)
    packed = pack_padded_sequence(
        decoder.embed(inputs), (lengths + 1).cpu(), batch_first=True, enforce_sorted=False
    )
    out, state = decoder.lstm(packed)
    h, _ = pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
    return h, state


ROWS_PER_CHUNK = 4096
"""Output-layer rows scored at once: bounds the ``[rows, V]`` logits held in memory."""


def _token_log_probs(decoder, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[R]`` float64 :math:`\\log p(\\text{target} \\mid h)` of each LSTM output row, exact
    from the output layer (the chosen words only), a chunk of rows at a time."""
    parts = []
    for h, t in zip(hidden.split(ROWS_PER_CHUNK), targets.split(ROWS_PER_CHUNK), strict=True):
        parts.append(decoder.out.log_prob(h, t).double())
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float64)


def _gumbel_argmax(log_p: torch.Tensor) -> torch.Tensor:
    """``[N]``: a draw from each row's categorical ``log_p [N, K]`` (float64 Gumbel-max: no
    probability is rounded away)."""
    u = torch.rand(log_p.shape, dtype=torch.float64, device=log_p.device)
    return (log_p - (-u.clamp(min=1e-300).log()).log()).argmax(-1)


class SequenceMH(Kernel):
    r"""Metropolis-Hastings over sentences for a :class:`ConstrainedSentences` target (the module
    explains the moves). ``moves`` are :math:`(p_r, p_i, p_d)`; ``top_k`` the candidate-set size
    (``None``: the whole word set); ``backward`` an :class:`~fabula.models.RNNLM` trained
    ``--reverse`` whose :math:`p(w \mid R)` joins the forward LM's in choosing candidates;
    ``rules`` ``"exact"`` or ``"released"`` (CGMH's released code; not a valid sampler).

    :meth:`run` runs ``num_chains`` chains per constraint set, all in one batch, each started at
    ``init`` (``{"x": [B, T] word ids padded with NO_WORD}``) or at its keywords (in their order)
    or, for a paraphrase, its source sentence. Draws per kept step: ``x``, ``length`` and
    ``log_pi``; statistics ``move`` (0 replace, 1 insert, 2 delete), ``accepted`` and
    ``accept_prob``, all ``[chain, draw, B]``.
    """

    name = "CGMH"

    def __init__(
        self,
        moves: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        top_k: int | None = 100,
        backward: RNNLM | None = None,
        rules: str = "exact",
    ):
        if len(moves) != 3:
            raise SettingsError(f"moves are three probabilities (replace, insert, delete), got {len(moves)}")
        for name, p in zip(MOVES, moves, strict=True):
            PROBABILITY.check(f"the {name} probability", p)
        if not math.isclose(sum(moves), 1.0, abs_tol=1e-9) or min(moves[1:]) == 0:
            raise SettingsError(f"move probabilities must sum to 1 with insert and delete > 0, got {moves}")
        if top_k is not None:
            COUNT.check("top_k", top_k, int)
        if rules not in RULES:
            raise SettingsError(f"unknown rules {rules!r}; choose from {RULES}")
        if backward is not None and not (isinstance(backward, RNNLM) and backward.reverse):
            raise UsageError("the backward language model must be an rnnlm trained with --reverse")
        self.log_moves = torch.tensor(moves, dtype=torch.float64).log()
        self.top_k, self.backward, self.rules = top_k, backward, rules

    # -- the pieces of a transition, shared by the sampler and tests/test_cgmh.py's matrix --

    def start(
        self, story: ConstrainedSentences, constraints: Constraints, init, num_chains: int
    ) -> SentenceState:
        """The chains' first state (see :meth:`run`), refused if outside the target's support."""
        width = story.max_length + 1
        if init is not None:
            first = init["x"]
        else:  # a paraphrase starts at its source where that holds the keywords, else at the keywords
            starts = []
            for b in range(constraints.size):
                start = constraints.keywords[b][constraints.keywords[b] != NO_WORD]
                if constraints.sources is not None:
                    source = constraints.sources[b][constraints.sources[b] != NO_WORD]
                    holds = keywords_hold(
                        source[None],
                        source.new_tensor([len(source)]),
                        constraints.keywords[b : b + 1],
                        story.ordered,
                    )
                    start = source if bool(holds) else start
                starts.append(start.tolist())
            first = padded(starts)
        first = first.to(story.device)
        if first.shape[1] > width:
            first = first[:, :width]
        tokens = torch.full((constraints.size, width), NO_WORD, dtype=torch.long, device=story.device)
        tokens[:, : first.shape[1]] = first
        lengths = (tokens != NO_WORD).sum(-1)
        repeat = (num_chains, 1)
        keywords = constraints.keywords.to(story.device).repeat(repeat)
        sources = None if constraints.sources is None else constraints.sources.to(story.device).repeat(repeat)
        tokens, lengths = tokens.repeat(repeat), lengths.repeat(num_chains)
        log_pi = story.log_target(tokens.clamp(min=0), lengths, keywords, sources)
        if not log_pi.isfinite().all():
            bad = int((~log_pi.isfinite()).nonzero()[0]) % constraints.size
            raise UsageError(
                f"constraint set {bad} starts outside the target's support (a sentence of 1 to "
                f"{story.max_length} words holding every keyword)"
            )
        return SentenceState(tokens, lengths, log_pi, keywords, sources)

    def candidates(self, story, left, left_len, right, right_len):
        """``(ids [N, K], log p(L) + log p(w | L) [N, K], (h, c))``: the candidate set of each
        context and what the forward LM says of it, with the LSTM state after ``<bos> L``."""
        decoder = story.lm.decoder
        hidden, state = _read(decoder, left, left_len)
        rows = torch.arange(len(left), device=left.device)
        steps = torch.arange(left.shape[1], device=left.device)
        prefix = decoder.out.log_prob(hidden[:, :-1], left.clamp(min=0)).double()
        log_prefix = torch.where(steps < left_len[:, None], prefix, 0.0).sum(-1)
        next_word = decoder.out.log_probs(hidden[rows, left_len]).double()  # [N, V]: log p(w | L)
        words = story.word_mask()
        if self.top_k is None or self.top_k >= int(words.sum()):
            ids = words.nonzero().squeeze(1).expand(len(left), -1)
        else:
            score = next_word
            if self.backward is not None:
                reversed_right = right.flip(1)
                # right-aligned after the flip: move each row's words to the front
                reversed_right = _shift(reversed_right, right.shape[1] - right_len, right_len, right.shape[1])
                back, _ = _read(self.backward.decoder, reversed_right, right_len)
                score = score + self.backward.decoder.out.log_probs(back[rows, right_len]).double()
            ids = torch.where(words, score, -torch.inf).topk(self.top_k, -1).indices
        return ids, log_prefix[:, None] + next_word.gather(1, ids), state

    def score_candidates(self, story, ids, log_head, state, right, right_len):
        """``[N, K]`` float64 :math:`\\log p_{LM}(L\\,w\\,R)`: the suffixes ``w R <eos>`` of all
        candidates read in one batch from the prefix state."""
        decoder = story.lm.decoder
        n, k = ids.shape
        width = int(right_len.max()) + 1
        right = right[:, : width - 1]
        inputs = torch.cat([ids[:, :, None], right.clamp(min=PAD)[:, None, :].expand(n, k, -1)], 2)
        steps = torch.arange(width, device=ids.device)
        targets = torch.where(steps < right_len[:, None], F.pad(right, (0, 1), value=PAD), EOS)
        h, c = (s.repeat_interleave(k, 1) for s in state)
        out, _ = decoder.lstm(decoder.embed(inputs.reshape(n * k, width)), (h, c))
        picked = _token_log_probs(
            decoder, out.reshape(n * k * width, -1), targets[:, None, :].expand(n, k, width).reshape(-1)
        )
        picked = picked.reshape(n, k, width)
        return log_head + torch.where(steps <= right_len[:, None, None], picked, 0.0).sum(-1)

    def outcomes(
        self, story, state: SentenceState, moves: torch.Tensor, positions: torch.Tensor, beta: float = 1.0
    ) -> Outcomes:
        """Every outcome of move ``moves[n]`` at ``positions[n]`` from ``state``, with its
        proposal probability and acceptance ratio (under :math:`\\pi^\\beta`)."""
        tokens, n = state.tokens, state.lengths
        width = tokens.shape[1]
        insert, delete = moves == INSERT, moves == DELETE
        right_start = torch.where(insert, positions, positions + 1)
        left_len, right_len = positions, n - right_start
        left = _shift(tokens, torch.zeros_like(n), left_len, max(int(left_len.max()), 1))
        right = _shift(tokens, right_start, right_len, max(int(right_len.max()), 1))
        ids, log_head, lm_state = self.candidates(story, left, left_len, right, right_len)
        log_lm = self.score_candidates(story, ids, log_head, lm_state, right, right_len)
        k = ids.shape[1]
        # the candidate sentences L w R and the deletion L R
        steps = torch.arange(width, device=tokens.device)
        at = steps[None, None, :]
        lead, gap = left_len[:, None, None], right_start[:, None, None]
        from_right = tokens.gather(
            1, (steps[None] - left_len[:, None] - 1 + right_start[:, None]).clamp(0, width - 1)
        )
        cand = torch.where(
            at < lead, tokens[:, None, :], torch.where(at == lead, ids[:, :, None], from_right[:, None, :])
        )
        cand_len = (left_len + 1 + right_len)[:, None].expand(-1, k)
        cand = torch.where(at < cand_len[:, :, None], cand, NO_WORD)
        removed = tokens.gather(1, (steps[None] - left_len[:, None] + gap[:, 0]).clamp(0, width - 1))
        deleted = torch.where(steps[None] < left_len[:, None], tokens, removed)
        deleted = torch.where(steps[None] < (n - 1)[:, None], deleted, NO_WORD)
        all_tokens = torch.cat([cand, deleted[:, None, :]], 1)
        all_len = torch.cat([cand_len, (n - 1)[:, None]], 1)
        sources = None if state.sources is None else state.sources.repeat_interleave(k + 1, 0)
        log_c = story.log_constraints(
            all_tokens.reshape(-1, width).clamp(min=0),
            all_len.reshape(-1),
            state.keywords.repeat_interleave(k + 1, 0),
            sources,
        ).reshape(-1, k + 1)
        log_pi_cand = torch.where(log_c[:, :k].isfinite(), log_lm + log_c[:, :k], -torch.inf)
        log_pi_del = torch.full_like(state.log_pi, -torch.inf)
        if delete.any():
            rows = delete & log_c[:, k].isfinite()
            if rows.any():
                log_pi_del[rows] = story.log_target(
                    deleted[rows].clamp(min=0),
                    (n - 1)[rows],
                    state.keywords[rows],
                    None if state.sources is None else state.sources[rows],
                )
        log_pi = torch.cat([log_pi_cand, log_pi_del[:, None]], 1)
        # the proposal q over the candidates (tempered), scaled for insertions by the released rules
        weight = beta * log_pi_cand
        released = self.rules == "released"
        if released:
            weight = torch.where(
                insert[:, None], weight + torch.log(10.0 / (n + 1).double())[:, None], weight
            )
        log_z = torch.logsumexp(weight, 1, keepdim=True)
        log_q_cand = torch.where(log_z.isfinite(), weight - log_z, -torch.inf)
        current = tokens.gather(1, positions.clamp(max=width - 1)[:, None])
        in_set = (ids == current) & ~insert[:, None]
        log_q_current = torch.where(in_set, log_q_cand, -torch.inf).logsumexp(
            1
        )  # q(x_i), -inf if x_i not in S
        ratios = self._released_ratios if released else self._exact_ratios
        log_alpha = ratios(state, insert, beta, log_pi_cand, log_pi_del, weight, log_q_cand, log_q_current)
        log_alpha = torch.where(log_pi.isfinite(), log_alpha.nan_to_num(nan=-torch.inf), -torch.inf)
        log_q = torch.cat(
            [
                torch.where(delete[:, None], -torch.inf, log_q_cand),
                torch.where(delete, 0.0, -torch.inf)[:, None],
            ],
            1,
        )
        return Outcomes(all_tokens, all_len, log_pi, log_q, log_alpha.clamp(max=0.0))

    def _exact_ratios(self, state, insert, beta, log_pi_cand, log_pi_del, weight, log_q_cand, log_q_current):
        """``[N, K + 1]`` log MH ratios, every proposal probability in them (the module's step 4)."""
        log_pm, n = self.log_moves.to(state.lengths.device), state.lengths.double()
        lp_r, lp_i, lp_d = log_pm[REPLACE], log_pm[INSERT], log_pm[DELETE]
        log_pi_x = beta * state.log_pi
        reverse = torch.where(insert, lp_d - torch.log1p(n), lp_r - n.log() + log_q_current)
        forward = torch.where(insert, lp_i - torch.log1p(n), lp_r - n.log())[:, None] + log_q_cand
        candidates = beta * log_pi_cand - log_pi_x[:, None] + reverse[:, None] - forward
        deletion = beta * log_pi_del - log_pi_x + (lp_i - n.log() + log_q_current) - (lp_d - n.log())
        return torch.cat([candidates, deletion[:, None]], 1)

    def _released_ratios(
        self, state, insert, beta, log_pi_cand, log_pi_del, weight, log_q_cand, log_q_current
    ):
        """``[N, K + 1]`` log acceptance of the released code: a replacement always (Gibbs, no
        ratio), an insertion with its scaled score ``weight``, a deletion as in the exact ratio; none
        whose (scaled) score is not above the threshold times the current one."""
        log_pm = self.log_moves.to(state.lengths.device)
        log_pi_x = beta * state.log_pi[:, None]
        inserting = weight - log_pi_x + (log_pm[DELETE] - log_pm[INSERT]) - log_q_cand
        candidates = torch.where(insert[:, None], inserting, torch.zeros_like(weight))
        deletion = self._exact_ratios(
            state, insert, beta, log_pi_cand, log_pi_del, weight, log_q_cand, log_q_current
        )
        log_alpha = torch.cat([candidates, deletion[:, -1:]], 1)
        threshold = 0.0 if state.step % 20 < 10 else 0.5
        if threshold > 0:
            scored = torch.cat(
                [torch.where(insert[:, None], weight, beta * log_pi_cand), beta * log_pi_del[:, None]], 1
            )
            log_alpha = torch.where(scored <= math.log(threshold) + log_pi_x, -torch.inf, log_alpha)
        return log_alpha

    def position_log_probs(self, moves: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[N]``: the log-probability of each position given the move (uniform)."""
        return -torch.where(moves == INSERT, lengths + 1, lengths).double().log()

    def transition(self, story, state: SentenceState, beta: float = 1.0) -> tuple[SentenceState, dict]:
        """One transition of every chain: the new state and ``{"move", "accepted", "accept_prob"}``."""
        n = state.lengths
        moves = _gumbel_argmax(self.log_moves.to(n.device).expand(len(n), -1))
        choices = torch.where(moves == INSERT, n + 1, n)
        positions = (torch.rand(len(n), device=n.device) * choices).long().clamp(max=choices - 1)
        out = self.outcomes(story, state, moves, positions, beta)
        proposable = out.log_q.isfinite().any(1)
        pick = _gumbel_argmax(torch.where(proposable[:, None], out.log_q, 0.0))
        rows = torch.arange(len(n), device=n.device)
        log_alpha = torch.where(proposable, out.log_alpha[rows, pick], -torch.inf)
        accepted = torch.rand(len(n), device=n.device, dtype=torch.float64).log() < log_alpha
        keep = accepted[:, None]
        new = replace(
            state,
            tokens=torch.where(keep, out.tokens[rows, pick], state.tokens),
            lengths=torch.where(accepted, out.lengths[rows, pick], n),
            log_pi=torch.where(accepted, out.log_pi[rows, pick], state.log_pi),
            step=state.step + 1,
        )
        return new, {"move": moves, "accepted": accepted, "accept_prob": log_alpha.exp()}

    # -- the sampler --

    def check(self, story, batch) -> None:
        if not isinstance(story, ConstrainedSentences):
            raise UsageError(
                f"CGMH samples constrained sentences; {type(story).__name__} is not a ConstrainedSentences target"
            )
        if not isinstance(batch, Constraints):
            raise UsageError(f"CGMH runs on a Constraints batch, got {type(batch).__name__}")

    @torch.no_grad()
    def run(self, story, batch, init, *, num_samples, warmup, num_chains, seed, progress) -> Chains:
        self.check(story, batch)
        clock = time.perf_counter()
        keep: dict[str, list] = {}
        with seeded(seed, story.device):
            state = self.start(story, batch, init, num_chains)
            for i in tqdm(range(warmup + num_samples), desc=self.name, disable=not progress, leave=False):
                state, stats = self.transition(story, state)
                if i >= warmup:
                    record = {"x": state.tokens, "length": state.lengths, "log_pi": state.log_pi, **stats}
                    for name, value in record.items():
                        keep.setdefault(name, []).append(
                            value.reshape(num_chains, batch.size, *value.shape[1:]).cpu()
                        )
        stacked = {name: torch.stack(v, 1) for name, v in keep.items()}  # [chain, draw, B, ...]
        samples = {s: stacked.pop(s) for s in ("x", "length", "log_pi")}
        return Chains(
            samples, stacked, {"compile": 0.0, "sample": time.perf_counter() - clock}, {"rules": self.rules}
        )


@torch.no_grad()
def anneal(
    kernel: SequenceMH,
    story: ConstrainedSentences,
    constraints: Constraints,
    steps: int,
    num_chains: int = 1,
    seed: int = 0,
    final_temperature: float = 0.01,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The search mode, not a sampler: simulated annealing of :math:`\pi` with ``kernel``'s
    moves, temperature falling linearly from 1 to ``final_temperature`` (the kernel then targets
    :math:`\pi^{1/T}`), returning for each constraint set the highest-:math:`\pi` sentence any of
    its ``num_chains`` chains visited: ``(tokens [B, T] padded with NO_WORD, log_pi [B])``."""
    COUNT.check("steps", steps, int)
    kernel.check(story, constraints)
    with seeded(seed, story.device):
        state = kernel.start(story, constraints, None, num_chains)
        best_tokens, best = state.tokens.clone(), state.log_pi.clone()
        for t in tqdm(range(steps), desc="CGMH search", disable=not progress, leave=False):
            temperature = 1.0 + (final_temperature - 1.0) * t / max(steps - 1, 1)
            state, _ = kernel.transition(story, state, beta=1.0 / temperature)
            better = state.log_pi > best
            best_tokens = torch.where(better[:, None], state.tokens, best_tokens)
            best = torch.where(better, state.log_pi, best)
    b = constraints.size
    winner = best.reshape(num_chains, b).argmax(0)
    cols = torch.arange(b, device=best.device)
    return best_tokens.reshape(num_chains, b, -1)[winner, cols], best.reshape(num_chains, b)[winner, cols]
