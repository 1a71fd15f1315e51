"""The speed of the CGMH kernel (:mod:`fabula.inference.sequence_mh`) at PTB sizes: MH steps per
second per chain and in total, with 100 candidates on one CPU thread, as the number of chains and
the sentence length grow, and where the time of a step goes.

The language models are the RNNLM of ``benchmarks/ptb_lm.py`` (10,000 words, 353-d embeddings,
191-d LSTM), forward and backward, with random weights: a step's arithmetic does not depend on
what the weights are. Every chain starts at a sentence of the given length (one keyword, so that
every move is possible); each configuration runs ``--steps`` transitions after one untimed.
Where the time goes: seconds inside the kernel's pieces (the prefix and backward reads that
choose the candidates, the candidates' suffix LSTM, their output layer and softmax, the
constraints, the deletions' rescoring), as shares of the step.

With ``--outputs``, ``--chains`` chains at ``--base-length`` words per output layer (:mod:`fabula.nn.output`,
exact layers only: the MH ratio needs normalised probabilities), the layers interleaved over
``--rounds`` rounds and the median steps/s of each given as a ratio to the first; the layers are
arranged by Zipfian word counts (a million tokens, count proportional to 1 / rank, as PTB's word
ids are ranked by frequency).
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager, nullcontext

import torch

import fabula.inference.sequence_mh as sequence_mh
from fabula.inference.sequence_mh import SequenceMH
from fabula.models import RNNLM
from fabula.models.constrained import ConstrainedSentences, Constraints, padded
from results_log import record, session

PIECES = ("choose candidates", "suffix LSTM", "output layer + softmax", "constraints", "rescore deletions")


@contextmanager
def timed(kernel, story, seconds: dict):
    """Time the kernel's pieces into ``seconds`` (by wrapping them) for the block."""

    def wrap(owner, name, piece):
        inner = getattr(owner, name)

        def timed_call(*args, **kwargs):
            clock = time.perf_counter()
            out = inner(*args, **kwargs)
            seconds[piece] += time.perf_counter() - clock
            return out

        setattr(owner, name, timed_call)
        return inner

    saved = [
        (kernel, "candidates", wrap(kernel, "candidates", "choose candidates")),
        (sequence_mh, "_token_log_probs", wrap(sequence_mh, "_token_log_probs", "output layer + softmax")),
        (story, "log_constraints", wrap(story, "log_constraints", "constraints")),
        (story, "log_target", wrap(story, "log_target", "rescore deletions")),
    ]
    score = kernel.score_candidates

    def suffix(*args, **kwargs):  # the suffix pass less its output layer, timed inside it
        before, clock = seconds["output layer + softmax"], time.perf_counter()
        out = score(*args, **kwargs)
        seconds["suffix LSTM"] += time.perf_counter() - clock - (seconds["output layer + softmax"] - before)
        return out

    kernel.score_candidates = suffix
    try:
        yield
    finally:
        for owner, name, inner in saved:
            setattr(owner, name, inner)
        kernel.score_candidates = score


def measure(
    kernel, story, chains: int, length: int, steps: int, vocab_size: int, profile: bool = False
) -> dict:
    torch.manual_seed(0)
    start = torch.randint(4, vocab_size, (1, length))
    constraints = Constraints(padded([[int(start[0, 0])]]), None, torch.arange(1))
    state = kernel.start(story, constraints, {"x": start}, chains)
    state, _ = kernel.transition(story, state)  # untimed: first-call allocations
    seconds = dict.fromkeys(PIECES, 0.0)
    with timed(kernel, story, seconds) if profile else nullcontext():
        clock, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            state, _ = kernel.transition(story, state)
        total, cpu = time.perf_counter() - clock, time.process_time() - cpu
    row = {
        "chains": chains,
        "length": length,
        "seconds": total,
        "steps_per_s_per_chain": steps / total,
        "steps_per_s_total": steps * chains / total,
        "cpu_seconds": cpu,
        "steps_per_cpu_s_per_chain": steps / cpu,
        "mean_length_after": float(state.lengths.double().mean()),
    }
    if profile:
        row["shares"] = {k: v / total for k, v in seconds.items()}
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=10_000)
    p.add_argument("--embed-dim", type=int, default=353)
    p.add_argument("--hidden-dim", type=int, default=191)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--chains", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--lengths", type=int, nargs="+", default=[5, 10, 20, 40])
    p.add_argument("--base-length", type=int, default=10, help="sentence length of the chains sweep")
    p.add_argument("--base-chains", type=int, default=4, help="chains of the length sweep")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--outputs", nargs="+", help="compare these output layers instead (the first is the baseline)"
    )
    p.add_argument("--rounds", type=int, default=5, help="--outputs: interleaved rounds")
    p.add_argument("--no-record", action="store_true")
    with session(
        p,
        argv,
        vocab_size=50,
        embed_dim=8,
        hidden_dim=8,
        candidates=5,
        chains=[1, 2],
        lengths=[3, 6],
        steps=2,
        rounds=1,
    ) as args:
        return by_output(args) if args.outputs else benchmark(args)


def language_models(args, output: str = "full") -> tuple[RNNLM, RNNLM]:
    """The forward and backward LMs at the benchmark's sizes, random weights, with ``output``."""
    torch.manual_seed(0)
    counts = (1e6 / torch.arange(1, args.vocab_size + 1, dtype=torch.float64)).round()
    models = []
    for reverse in (False, True):
        lm = RNNLM(args.vocab_size, args.embed_dim, args.hidden_dim, reverse=reverse, output=output).eval()
        lm.decoder.out.fit_frequencies(counts)
        models.append(lm)
    return models[0], models[1]


@torch.no_grad()
def by_output(args) -> dict:
    """MH steps/s per chain for each output layer and number of chains (``--chains``, at
    ``--base-length`` words), the layers interleaved round by round, medians."""
    torch.set_num_threads(args.threads)
    setups = {}
    for output in args.outputs:
        forward, backward = language_models(args, output)
        story = ConstrainedSentences(forward, max_length=args.base_length + 10)
        setups[output] = (SequenceMH(top_k=args.candidates, backward=backward), story)
    cells = [(output, chains) for chains in args.chains for output in args.outputs]
    rates, lengths = {cell: [] for cell in cells}, {cell: [] for cell in cells}
    for _ in range(args.rounds):
        for output, chains in cells:
            kernel, story = setups[output]
            row = measure(kernel, story, chains, args.base_length, args.steps, args.vocab_size)
            rates[output, chains].append(row["steps_per_s_per_chain"])
            lengths[output, chains].append(row["mean_length_after"])
    median = {cell: statistics.median(r) for cell, r in rates.items()}
    base = args.outputs[0]
    rows = [
        f"| output layer | chains | MH steps/s per chain (median) | ratio to {base} | rounds | mean length after |",
        "|---|---|---|---|---|---|",
    ]
    for (output, chains), rate in median.items():
        spread = ", ".join(f"{r:.2f}" for r in rates[output, chains])
        rows.append(
            f"| {output} | {chains} | {rate:.2f} | {rate / median[base, chains]:.2f}x | {spread} | "
            f"{statistics.mean(lengths[output, chains]):.1f} |"
        )
    table = "\n".join(rows) + (
        f"\n\nChains at {args.base_length} words, {args.candidates} candidates from forward x backward LM, "
        f"{args.steps} timed steps per round, {args.rounds} interleaved rounds; {args.vocab_size} words, "
        f"{args.embed_dim}-d embeddings, {args.hidden_dim}-d LSTM, {args.threads} thread(s)."
    )
    print(table)
    key = [f"{output} x {chains}" for output, chains in cells]
    results = {
        "steps_per_s_per_chain": dict(zip(key, rates.values(), strict=True)),
        "median": dict(zip(key, median.values(), strict=True)),
        "settings": vars(args),
    }
    if not args.no_record:
        record("cgmh_speed_outputs", results, table)
    return results


@torch.no_grad()
def benchmark(args) -> dict:
    torch.set_num_threads(args.threads)
    forward, backward = language_models(args)
    story = ConstrainedSentences(forward, max_length=max(args.lengths) + 10)
    kernel = SequenceMH(top_k=args.candidates, backward=backward)
    by_chains = [
        measure(kernel, story, c, args.base_length, args.steps, args.vocab_size, profile=True)
        for c in args.chains
    ]
    by_length = [
        measure(kernel, story, args.base_chains, n, args.steps, args.vocab_size) for n in args.lengths
    ]
    rows = [
        "| chains | start length | steps/s per chain | steps/s total | s per step | steps per CPU-s per chain |",
        "|---|---|---|---|---|---|",
    ]
    for r in by_chains + by_length:
        rows.append(
            f"| {r['chains']} | {r['length']} | {r['steps_per_s_per_chain']:.2f} | {r['steps_per_s_total']:.1f} | "
            f"{r['seconds'] / args.steps:.3f} | {r['steps_per_cpu_s_per_chain']:.2f} |"
        )
    shares = by_chains[-1]["shares"]
    where = ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items())
    table = "\n".join(rows) + (
        f"\n\nWhere a step's time goes ({by_chains[-1]['chains']} chains, length {args.base_length}): {where} "
        f"(the rest: drawing moves, building the candidate sentences, acceptance). Sizes: {args.vocab_size} words, "
        f"{args.embed_dim}-d embeddings, {args.hidden_dim}-d LSTM, {args.candidates} candidates from forward x "
        f"backward LM, {args.steps} timed steps per row, {args.threads} thread(s)."
    )
    print(table)
    results = {"by_chains": by_chains, "by_length": by_length, "settings": vars(args)}
    if not args.no_record:
        record("cgmh_speed", results, table)
    return results


if __name__ == "__main__":
    main()
