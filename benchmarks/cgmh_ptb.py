"""Keyword-to-sentence on the Penn Treebank by CGMH (Miao et al. 2019): the exact
Metropolis-Hastings kernel beside the released code's rules (:mod:`fabula.inference.sequence_mh`).

Forward and backward RNNLMs trained on PTB train (``fabula train rnnlm`` / ``--reverse``) draw
sentences holding 1 to 4 keywords taken from PTB test sentences
(``benchmarks/cgmh_ptb_keywords.txt``, written by ``--make-keywords`` with a fixed seed). Each
keyword set gets ``--chains`` chains of ``--steps`` MH steps (``--burn-in`` discarded), all sets
and chains in one batch; a chain's output is its last draw. Reported: constraint satisfaction
(of every kept state and of the outputs), NLL per word (``<eos>`` counted) of the outputs under a
separately trained LM (``--scorer``, not the sampler's), distinct-1/2 of the outputs, acceptance
per move, r-hat of log pi across a set's chains (median and largest over sets), and steps per
second. For the released rules also their own output, the best visited sentence.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fabula.cgmh import CGMHSettings, acceptance, sampler
from fabula.data import load_dataset
from fabula.data.text import TextBatch
from fabula.diagnostics import to_arviz
from fabula.diagnostics.arviz import az
from fabula.inference.sequence_mh import MOVES, SequenceMH
from fabula.models.constrained import NO_WORD, ConstrainedSentences, Constraints, keywords_hold
from fabula.run import TrainConfig, load_run, train
from fabula.run.flags import add_arguments, from_arguments
from results_log import record, session

KERNEL = ("chains", "steps", "burn_in", "candidates", "max_length", "seed")
"""The settings of ``fabula cgmh`` that this benchmark takes as flags (the keyword sets are its own)."""
KEYWORDS = Path(__file__).resolve().parent / "cgmh_ptb_keywords.txt"
SKIPPED = {
    "<unk>",
    "N",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "and",
    "'s",
    "for",
    "that",
    "is",
    "on",
    "it",
    "by",
}
"""Words never drawn as keywords (PTB's unknown word and number token, and the commonest function words)."""


def make_keywords(test, count: int, seed: int) -> list[tuple[int, list[str]]]:
    """``count`` keyword sets: a test sentence of 5-25 words drawn at random, then 1-4 of its
    distinct words outside :data:`SKIPPED`, in their sentence order; ``(line, words)``."""
    rng = random.Random(seed)
    words = test.vocab.words
    out = []
    while len(out) < count:
        line = rng.randrange(len(test))
        sentence = [words[i] for i in test.sentence(line)]
        choices = sorted({w for w in sentence if w not in SKIPPED}, key=sentence.index)
        if not 5 <= len(sentence) <= 25 or not choices:
            continue
        k = min(rng.randint(1, 4), len(choices))
        picked = set(rng.sample(choices, k))
        out.append((line + 1, [w for w in choices if w in picked]))
    return out


def read_keywords(path: Path) -> list[list[str]]:
    return [
        line.split("\t", 1)[1].split() for line in path.read_text().splitlines() if not line.startswith("#")
    ]


def distinct(sentences: list[list[str]], n: int) -> float:
    grams = [tuple(s[i : i + n]) for s in sentences for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)


def tiny_runs(data_dir: str, root: Path) -> dict[str, str]:
    """Smoke: tiny forward, backward and scoring LMs on the tiny PTB stand-in."""
    runs = {}
    for name, extra in (("forward", {}), ("backward", {"reverse": True}), ("scorer", {"seed": 1})):
        out = str(root / name)
        config = TrainConfig.create(
            "rnnlm",
            data="ptb",
            data_dir=data_dir,
            epochs=1,
            batch_size=16,
            embed_dim=8,
            hidden_dim=8,
            **extra,
        )
        train(config, out, progress=False)
        runs[name] = out
    return runs


@torch.no_grad()
def run_rules(rules, forward, backward, sets, vocab, settings: CGMHSettings, progress: bool) -> dict:
    story = ConstrainedSentences(forward, max_length=settings.max_length)
    kernel = SequenceMH(top_k=settings.candidates, backward=backward, rules=rules)
    constraints = Constraints.from_words(vocab, sets)
    mcmc = sampler(story, kernel, settings.steps, settings.burn_in, settings.chains, settings.seed, progress)
    cpu = time.process_time()
    chains = mcmc.run(constraints)
    cpu = time.process_time() - cpu
    x, lengths, log_pi = chains.samples["x"], chains.samples["length"], chains.samples["log_pi"]
    c, d, b, width = x.shape
    keywords = constraints.keywords[None, None].expand(c, d, -1, -1).reshape(c * d * b, -1)
    holds = keywords_hold(x.reshape(-1, width).clamp(min=0), lengths.reshape(-1), keywords, story.ordered)
    with np.errstate(divide="ignore", invalid="ignore"):  # a chain that never moved: r-hat is nan
        rhat = torch.as_tensor(az.rhat(to_arviz(mcmc, constraints))["log_pi"].values)
    best = log_pi.permute(2, 0, 1).reshape(b, -1).argmax(1)  # per set, over its chains and draws
    flat_x = x.permute(2, 0, 1, 3).reshape(b, c * d, width)
    outputs = {
        "samples": [x[ci, -1, bi] for bi in range(b) for ci in range(c)],
        "best visited": [flat_x[bi, best[bi]] for bi in range(b)],
    }
    return {
        "seconds": mcmc.seconds["sample"],
        "steps_per_s_total": settings.steps * c * b / mcmc.seconds["sample"],
        "steps_per_cpu_s_total": settings.steps * c * b / cpu,
        "satisfied_states": float(holds.double().mean()),
        "acceptance": acceptance(chains.stats),
        "rhat_median": float(rhat.nanmedian()),
        "rhat_max": float(rhat[~rhat.isnan()].max()) if (~rhat.isnan()).any() else float("nan"),
        "rhat_undefined": int(rhat.isnan().sum()),
        "outputs": {
            k: [[vocab.words[i] for i in row.tolist() if i != NO_WORD] for row in v]
            for k, v in outputs.items()
        },
    }


@torch.no_grad()
def score(scorer, sentences: list[list[str]], vocab) -> float:
    """NLL per word (``<eos>`` counted) of ``sentences`` under ``scorer``."""
    batch = TextBatch.from_ids([vocab.encode(s) for s in sentences]).to(scorer.device)
    return float(-scorer.log_prob(batch).sum() / batch.lengths.sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--forward", help="run directory of the forward rnnlm (trained on PTB)")
    p.add_argument("--backward", help="run directory of the backward rnnlm (trained --reverse)")
    p.add_argument("--scorer", help="run directory of a separately trained PTB rnnlm that scores the outputs")
    p.add_argument("--data-dir", default="../shared/data", help="folder holding ptb/")
    p.add_argument("--keywords", default=str(KEYWORDS), help="keyword file (LINE<TAB>words)")
    p.add_argument(
        "--make-keywords", type=int, metavar="N", help="write N keyword sets to --keywords and stop"
    )
    p.add_argument("--sets", type=int, default=20, help="keyword sets used (the file's first)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    add_arguments(p, CGMHSettings, "cgmh", {"chains": 2, "steps": 100, "burn_in": 50}, only=KERNEL)
    tiny = {"cgmh.steps": 6, "cgmh.burn_in": 2, "cgmh.candidates": 5, "cgmh.max_length": 12}
    with session(p, argv, sets=3, **tiny) as args:
        return benchmark(args, from_arguments(CGMHSettings, args, "cgmh"))


def benchmark(args, settings: CGMHSettings) -> dict:
    """The benchmark with parsed ``args`` and the kernel's settings ``settings``; returns what it records."""
    torch.set_num_threads(args.threads)
    test = load_dataset("ptb", args.data_dir)["test"]
    if args.make_keywords:
        rows = make_keywords(test, args.make_keywords, settings.seed)
        header = f"# PTB test line<TAB>keywords: {args.make_keywords} sets, benchmarks/cgmh_ptb.py --make-keywords, seed {settings.seed}\n"
        Path(args.keywords).write_text(header + "".join(f"{line}\t{' '.join(w)}\n" for line, w in rows))
        print(f"wrote {len(rows)} keyword sets to {args.keywords}")
        return {"keyword_sets": len(rows)}
    if args.smoke:
        runs = tiny_runs(args.data_dir, Path(tempfile.mkdtemp(prefix="cgmh-ptb-")))
        sets = [words for _, words in make_keywords(test, args.sets, settings.seed)]
    else:
        runs = {"forward": args.forward, "backward": args.backward, "scorer": args.scorer}
        sets = read_keywords(Path(args.keywords))[: args.sets]
    loaded = load_run(runs["forward"], args.data_dir)
    forward, vocab = loaded.inference.story, loaded.splits["train"].vocab
    backward = load_run(runs["backward"], args.data_dir).inference.story
    output = loaded.config.model.output
    results = {"sets": sets, "runs": runs, "output": output}
    for rules in ("exact", "released"):
        results[rules] = run_rules(rules, forward, backward, sets, vocab, settings, not args.smoke)
    # loaded only now, after the sampling: it may still have been training when the sampling began
    scored = load_run(runs["scorer"], args.data_dir)
    results["scorer_epoch"] = scored.metadata["epoch"]
    rows = [
        "| rules | output | keywords satisfied (states / outputs) | NLL/word (scorer) | distinct-1 | distinct-2 | "
        "accept replace / insert / delete | r-hat log pi (median, max) | steps/s total (wall, CPU) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rules in ("exact", "released"):
        r = results[rules]
        acc = " / ".join(f"{r['acceptance'][m]:.3f}" for m in MOVES)
        kinds = ("samples",) if rules == "exact" else ("samples", "best visited")
        for kind in kinds:
            out = r["outputs"][kind]
            chains_of_set = settings.chains if kind == "samples" else 1
            satisfied = sum(
                all(o.count(w) >= sets[i // chains_of_set].count(w) for w in sets[i // chains_of_set])
                for i, o in enumerate(out)
            ) / len(out)
            nll = score(scored.inference.story, out, vocab)
            r[f"{kind}_satisfied"], r[f"{kind}_nll_per_word"] = satisfied, nll
            rows.append(
                f"| {rules} | {kind} | {100 * r['satisfied_states']:.1f}% / {100 * satisfied:.1f}% | "
                f"{nll:.3f} | {distinct(out, 1):.3f} | {distinct(out, 2):.3f} | {acc} | "
                f"{r['rhat_median']:.2f}, {r['rhat_max']:.2f} | {r['steps_per_s_total']:.2f}, {r['steps_per_cpu_s_total']:.2f} |"
            )
    examples = "; ".join(
        f'{" ".join(sets[i])} -> "{" ".join(results["exact"]["outputs"]["samples"][i * settings.chains])}"'
        for i in range(min(3, len(sets)))
    )
    table = "\n".join(rows) + (
        f"\n\n{len(sets)} keyword sets x {settings.chains} chains, {settings.steps} steps ({settings.burn_in} burn-in), "
        f"{settings.candidates} candidates from forward x backward LM (output layer {output}), at most "
        f"{settings.max_length} words; the scorer "
        f"after epoch {results['scorer_epoch']}. Examples (exact): {examples}."
    )
    print(table)
    if not args.no_record:
        # a run with another output layer is recorded beside the full softmax's, not over it
        record("cgmh_ptb" if output == "full" else f"cgmh_ptb_{output.replace(':', '_')}", results, table)
    return results


if __name__ == "__main__":
    main()
