"""Paraphrase on Quora by CGMH (Miao et al. 2019, Table 3: CGMH BLEU-ref 18.85, BLEU-ori 50.18).

A forward RNNLM (and optionally a backward one, ``--backward``, whose scores join the forward
LM's in choosing candidates) trained on the ``quora`` dataset's ``train`` split, which is disjoint
from the evaluated sources and their references (:func:`fabula.data.registry._read_quora`: the
sources are lines 1-1,000 of ``test.txt``, their references lines 1-1,000 of ``ref.txt``; the LMs
read ``test.txt`` lines 1,001-23,407 and ``ref.txt`` lines 1,001-20,000, less any line equal to an
evaluated source or reference or to a held-out line). The target is
:math:`\\pi(x) \\propto p_{LM}(x)\\, \\mathrm{sim}(x, s)^{\\gamma}` (the embedding-matching
similarity of :mod:`fabula.models.constrained`, no keywords), each chain started at its source.
Evaluated: the first ``--sources`` sources whose words are all in the LMs' vocabulary (a source
with an unknown word could not be a state of the chain). Outputs: each source's last draw of the
exact kernel (samples), and the search mode's best visited sentence (simulated annealing). BLEU-4
against the reference (BLEU-ref) and against the source (BLEU-ori), beside copying the source.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import tempfile
from pathlib import Path

import torch

from fabula.cgmh import CGMHSettings, acceptance, sampler
from fabula.data.registry import DATASETS, QUORA_EVALUATED, QUORA_VALID, locate, sha256_of
from fabula.evaluation.bleu import corpus_bleu
from fabula.inference.sequence_mh import SequenceMH, anneal
from fabula.models.constrained import NO_WORD, ConstrainedSentences, Constraints
from fabula.run import TrainConfig, load_run, train
from fabula.run.flags import add_arguments, from_arguments
from results_log import record, session

KERNEL = ("chains", "steps", "burn_in", "candidates", "similarity_power", "max_length", "seed")
"""The settings of ``fabula cgmh`` that this benchmark takes as flags (the sources are its own;
``--steps`` also counts the search's annealing steps)."""
PAPER = {"CGMH (Miao et al. 2019)": (18.85, 50.18)}


@contextlib.contextmanager
def tiny_quora(folder: Path, seed: int = 0):
    """Smoke: tiny random stand-ins for Quora's ``test.txt`` and ``ref.txt`` under ``folder``
    (as many lines as the split needs), which the registry expects for the block."""
    rng = random.Random(seed)
    words = [f"q{i:02d}" for i in range(30)]

    def lines(n):
        return "".join(" ".join(rng.choices(words, k=rng.randint(3, 8))) + "\n" for _ in range(n))

    quora = folder / DATASETS["quora"].folder
    quora.mkdir(parents=True, exist_ok=True)
    (quora / "test.txt").write_text(lines(QUORA_EVALUATED + QUORA_VALID + 40))
    (quora / "ref.txt").write_text(lines(QUORA_EVALUATED + 40))
    saved = DATASETS["quora"]
    files = tuple(dataclasses.replace(f, sha256=sha256_of(quora / f.name)) for f in saved.files)
    DATASETS["quora"] = dataclasses.replace(saved, files=files)
    try:
        yield folder
    finally:
        DATASETS["quora"] = saved


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", help="run directory of the forward rnnlm (trained on quora)")
    p.add_argument(
        "--backward",
        help="run directory of the backward rnnlm (trained --reverse); without it the forward LM alone",
    )
    p.add_argument("--data-dir", default="../shared/data", help="folder holding cgmh/quora/")
    p.add_argument("--sources", type=int, default=50, help="sources evaluated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    add_arguments(p, CGMHSettings, "cgmh", {"chains": 1, "steps": 100, "burn_in": 50}, only=KERNEL)
    tiny = {"cgmh.steps": 6, "cgmh.burn_in": 2, "cgmh.candidates": 5, "cgmh.max_length": 12}
    with session(p, argv, sources=4, **tiny) as args:
        settings = from_arguments(CGMHSettings, args, "cgmh")
        if args.smoke:
            with tiny_quora(Path(args.data_dir)):
                return benchmark(args, settings)
        return benchmark(args, settings)


def benchmark(args, settings: CGMHSettings) -> dict:
    """The benchmark with parsed ``args`` and the kernel's settings; returns what it records."""
    torch.set_num_threads(args.threads)
    if args.smoke:
        root = Path(tempfile.mkdtemp(prefix="cgmh-quora-"))
        runs = {}
        for name, extra in (("forward", {}), ("backward", {"reverse": True})):
            config = TrainConfig.create(
                "rnnlm",
                data="quora",
                data_dir=args.data_dir,
                epochs=1,
                batch_size=64,
                embed_dim=8,
                hidden_dim=8,
                **extra,
            )
            train(config, root / name, progress=False)
            runs[name] = str(root / name)
    else:
        runs = {"forward": args.forward, "backward": args.backward}
    return paraphrase(args, settings, runs)


@torch.no_grad()
def paraphrase(args, settings: CGMHSettings, runs: dict) -> dict:
    """Sample and search paraphrases of the sources with the LMs of ``runs``, score them, record."""
    loaded = load_run(runs["forward"], args.data_dir)
    forward, vocab = loaded.inference.story, loaded.splits["train"].vocab
    backward = None if runs["backward"] is None else load_run(runs["backward"], args.data_dir).inference.story
    folder = locate("quora", args.data_dir)
    raw_sources = (folder / "test.txt").read_text().splitlines()[:QUORA_EVALUATED]
    raw_refs = (folder / "ref.txt").read_text().splitlines()[:QUORA_EVALUATED]
    known = [
        i
        for i, s in enumerate(raw_sources)
        if all(w in vocab.index and vocab.index[w] > 3 for w in s.split())
    ]
    chosen = known[: args.sources]
    sources = [raw_sources[i].split() for i in chosen]
    references = [raw_refs[i].split() for i in chosen]
    story = ConstrainedSentences(
        forward, max_length=settings.max_length, similarity_power=settings.similarity_power
    )
    kernel = SequenceMH(top_k=settings.candidates, backward=backward)
    constraints = Constraints.from_words(vocab, [[] for _ in sources], sources)
    mcmc = sampler(
        story, kernel, settings.steps, settings.burn_in, settings.chains, settings.seed, not args.smoke
    )
    chains = mcmc.run(constraints)
    x = chains.samples["x"]

    def words(row):
        return [vocab.words[i] for i in row.tolist() if i != NO_WORD]

    outputs = {
        "copy the source": sources,
        "exact MH, last draw": [words(x[0, -1, b]) for b in range(len(sources))],
    }
    best, _ = anneal(
        kernel, story, constraints, settings.steps, settings.chains, settings.seed, progress=not args.smoke
    )
    outputs["search (annealing), best visited"] = [words(row) for row in best]
    bleu = {
        name: {
            "ref": corpus_bleu(out, [[r] for r in references]),
            "ori": corpus_bleu(out, [[s] for s in sources]),
            "changed": sum(o != s for o, s in zip(out, sources, strict=True)) / len(out),
        }
        for name, out in outputs.items()
    }
    rates = acceptance(chains.stats)
    rows = ["| output | BLEU-ref | BLEU-ori | sources changed |", "|---|---|---|---|"]
    rows += [f"| {name} (paper) | {r:.2f} | {o:.2f} | |" for name, (r, o) in PAPER.items()]
    rows += [
        f"| fabula {name} | {b['ref']:.2f} | {b['ori']:.2f} | {100 * b['changed']:.0f}% |"
        for name, b in bleu.items()
    ]
    examples = "; ".join(
        f'"{" ".join(sources[i])}" -> "{" ".join(outputs["exact MH, last draw"][i])}"'
        for i in range(min(3, len(sources)))
    )
    table = "\n".join(rows) + (
        f"\n\n{len(sources)} sources (the first of the {QUORA_EVALUATED} evaluated whose words are all in the "
        f"{len(vocab)}-word vocabulary; {chosen[-1] + 1 - len(chosen)} skipped before them), {settings.chains} chain(s) "
        f"each, {settings.steps} steps ({settings.burn_in} burn-in), {settings.candidates} candidates from the "
        f"{'forward x backward LM' if backward is not None else 'forward LM alone'}, similarity power "
        f"{settings.similarity_power}; acceptance {', '.join(f'{m} {a:.3f}' for m, a in rates.items())}; "
        f"{mcmc.seconds['sample']:.0f} s sampling. Examples: {examples}."
    )
    print(table)
    results = {"bleu": bleu, "acceptance": rates, "sources": chosen, "outputs": outputs, "runs": runs}
    if not args.no_record:
        record("cgmh_quora", results, table)
    return results


if __name__ == "__main__":
    main()
