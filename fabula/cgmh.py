"""``fabula cgmh``: constrained sentences from trained language-model runs, by the exact
Metropolis-Hastings kernel of :mod:`fabula.inference.sequence_mh` (or, with ``--search``, by its
simulated annealing). The settings are defined once here; the command's flags come from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fabula.data import DataFormatError
from fabula.errors import SettingsError, UsageError
from fabula.inference import MCMC
from fabula.inference.sequence_mh import MOVES, RULES, SequenceMH, anneal
from fabula.models import RNNLM
from fabula.models.constrained import NO_WORD, ConstrainedSentences, Constraints
from fabula.run import load_run
from fabula.settings import COUNT, NONNEGATIVE, PROBABILITY, SEED, Range, check_ranges, setting


@dataclass
class CGMHSettings:
    """CGMH: the target and the kernel"""

    keywords: tuple[str, ...] = setting(
        (), "keyword sets, one quoted set of words each (every word must appear)"
    )
    paraphrase: str | None = setting(
        None, "a source sentence: paraphrase it (similarity to it, and the chains start at it)"
    )
    ordered: bool = setting(False, "the keywords must appear in the given order")
    similarity_power: float = setting(
        8.0, "--paraphrase: the power of the similarity to the source in the target", within=NONNEGATIVE
    )
    length_weight: float = setting(0.0, "log-weight per word in the target (a length tilt)", within=Range())
    max_length: int = setting(30, "words of a sentence at most", within=COUNT)
    chains: int = setting(4, "chains per keyword set", within=COUNT)
    steps: int = setting(200, "MH steps per chain, burn-in included", within=COUNT)
    burn_in: int = setting(100, "steps discarded before the kept draws", within=NONNEGATIVE)
    candidates: int | None = setting(
        100, "top-k candidate words of a move ('none': the whole vocabulary)", within=COUNT
    )
    moves: tuple[float, ...] = setting(
        (1 / 3, 1 / 3, 1 / 3), "probabilities of replace, insert and delete", within=PROBABILITY
    )
    rules: str = setting(
        "exact", "exact MH, or the released CGMH code's rules (not a valid sampler)", choices=list(RULES)
    )
    search: bool = setting(
        False, "search, not sample: simulated annealing, printing the best sentence it visits"
    )
    seed: int = setting(0, "random seed", within=SEED)

    def __post_init__(self):
        check_ranges(self)
        if self.burn_in >= self.steps:
            raise SettingsError(f"--burn-in {self.burn_in} leaves no draw of --steps {self.steps}")
        if len(self.moves) != 3 or abs(sum(self.moves) - 1) > 1e-6 or min(self.moves[1:]) == 0:
            raise SettingsError(
                f"--moves takes three probabilities (replace, insert, delete) summing to 1, insert and "
                f"delete above 0; got {' '.join(map(str, self.moves))}"
            )


def language_model(path: str | Path, data_dir, device, reverse: bool):
    """The RNNLM of a run and its vocabulary, refusing a run that is not one, or reads the
    wrong way."""
    run = load_run(path, data_dir=data_dir, device=device)
    story = run.inference.story
    if not isinstance(story, RNNLM):
        raise UsageError(
            f"{path} holds a {run.metadata['story']} run; cgmh needs a sentence story with an exact "
            "log-probability (an rnnlm run)"
        )
    if story.reverse != reverse:
        way = "--reverse" if reverse else "left to right"
        raise UsageError(f"{path}: the {'backward' if reverse else 'forward'} LM must be trained {way}")
    return story, next(iter(run.splits.values())).vocab


def cgmh(
    settings: CGMHSettings, run, backward=None, data_dir=None, device="cpu", progress=True
) -> list[dict]:
    """Sample (or search) for ``settings``' constraint sets under the forward LM of ``run`` (and
    the backward LM of ``backward``): one record per chain, ``{"set", "chain", "sentence",
    "log_pi", "length", "acceptance": {move: rate or None}}``, the sentence the chain's last
    draw; with ``search``, one record per set, its best visited sentence."""
    if not settings.keywords and settings.paraphrase is None:
        raise SettingsError("give --keywords, --paraphrase, or both")
    forward, vocab = language_model(run, data_dir, device, reverse=False)
    back = None
    if backward is not None:
        back, back_vocab = language_model(backward, data_dir, device, reverse=True)
        if back_vocab.sha256 != vocab.sha256:
            raise DataFormatError(backward, "the backward LM's vocabulary differs from the forward LM's")
    sets = [k.split() for k in settings.keywords] or [[]]
    sources = None if settings.paraphrase is None else [settings.paraphrase.split()] * len(sets)
    constraints = Constraints.from_words(vocab, sets, sources).to(device)
    story = ConstrainedSentences(
        forward,
        max_length=settings.max_length,
        ordered=settings.ordered,
        similarity_power=settings.similarity_power,
        length_weight=settings.length_weight,
    )
    kernel = SequenceMH(tuple(settings.moves), settings.candidates, back, settings.rules)

    def words(ids: torch.Tensor) -> str:
        return " ".join(vocab.words[i] for i in ids.tolist() if i != NO_WORD)

    if settings.search:
        tokens, log_pi = anneal(
            kernel, story, constraints, settings.steps, settings.chains, settings.seed, progress=progress
        )
        return [
            {"set": b, "sentence": words(tokens[b]), "log_pi": float(log_pi[b])}
            for b in range(constraints.size)
        ]
    mcmc = sampler(story, kernel, settings.steps, settings.burn_in, settings.chains, settings.seed, progress)
    chains = mcmc.run(constraints)
    return [
        {
            "set": b,
            "chain": c,
            "sentence": words(chains.samples["x"][c, -1, b]),
            "log_pi": float(chains.samples["log_pi"][c, -1, b]),
            "length": int(chains.samples["length"][c, -1, b]),
            "acceptance": acceptance(chains.stats, c, b),
        }
        for b in range(constraints.size)
        for c in range(settings.chains)
    ]


def sampler(story, kernel, steps: int, burn_in: int, chains: int, seed: int, progress: bool) -> MCMC:
    """:class:`~fabula.inference.MCMC` with ``kernel``: ``chains`` chains per constraint set,
    ``steps`` transitions each, the first ``burn_in`` discarded."""
    return MCMC(
        story,
        kernel=kernel,
        num_samples=steps - burn_in,
        warmup=burn_in,
        num_chains=chains,
        seed=seed,
        progress=progress,
    )


def acceptance(
    stats: dict[str, torch.Tensor], chain=slice(None), item=slice(None)
) -> dict[str, float | None]:
    """The acceptance rate of each move type in chain ``chain`` of constraint set ``item`` (by
    default pooled over all), ``None`` for a move never tried."""
    moves, accepted = stats["move"][chain, :, item], stats["accepted"][chain, :, item]
    rates = {}
    for m, name in enumerate(MOVES):
        tried = moves == m
        rates[name] = float(accepted[tried].double().mean()) if tried.any() else None
    return rates
