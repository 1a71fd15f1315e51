"""Output layers (:mod:`fabula.nn.output`) on Penn Treebank at the Bowman reproduction's sizes
(353-d embeddings, 191-d LSTM, 13-d z; ``benchmarks/ptb_lm.py``).

``--part quality``: each layer built as ``fabula train`` builds it and trained by the same
inference object with the reproduction's recipe (SGD at lr 1, clip 5, dropout 0.3; the VAE's
annealing and free bits) for the same ``--steps`` batches of 32 sentences, then the test NLL by
the story's estimator (the RNNLM's exact likelihood, the VAE's ELBO: every layer is evaluated by
its exact normalised probabilities), with training and evaluation tokens/s as ratios to the
first layer of the same invocation.

``--part speed``: the RNNLM's training step (forward, backward, SGD) and exact evaluation per
layer on the same fixed batches, the layers interleaved round by round, medians of ``--rounds``
rounds; on PTB (10,000 words), Yahoo (``--data yahoo``, 20,000 words, its test split standing in
for training text) or the largest vocabulary in the shared data that has text to read
(``--data quora-30k``: CGMH's Quora questions with CGMH's 30,000-word Quora vocabulary).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from fabula.data.registry import load_dataset
from fabula.data.text import SPECIALS, TextCorpus, TextVocab
from fabula.evaluation import evaluate
from fabula.inference.kinds import build
from fabula.models import RNNLM
from fabula.nn import evaluation_mode
from fabula.run import TrainConfig, build_story, inference_setup
from results_log import record, session

LAYERS = ("full", "class", "adaptive", "sampled", "mos", "kerbs")
STEPS = 400
"""The quality part's default training budget per layer: 0.3 of a PTB epoch."""


def quality(args) -> tuple[dict, str]:
    """Train each layer for the same steps on the same batches; the table of PPL and speed ratios."""
    vae = args.story == "lstm-vae"
    splits = load_dataset("ptb", args.data_dir, download=False)
    train, test = splits["train"], splits["test"]
    batches = list(train.batches(32, shuffle=True, seed=0, epoch=0))[: args.steps]
    train_tokens = sum(int(b.lengths.sum()) for b in batches)
    rows = {}
    for layer in args.layers:
        config = TrainConfig.create(
            args.story,
            data="ptb",
            data_dir=args.data_dir,
            lr=1.0,
            optimizer="sgd",
            batch_size=32,
            embed_dim=args.embed_dim,
            hidden_dim=args.hidden_dim,
            dropout=0.3,
            output=layer,
            **({"latent_dim": 13, "anneal": args.anneal, "free_bits": 0.2} if vae else {}),
            clip_norm=5.0,
        )
        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        story, guide = build_story(config, train)
        inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
        inference.trainer.configure(torch.device("cpu"))
        inference.begin(train)
        clock = time.perf_counter()
        for batch in tqdm(batches, desc=f"{args.story} {layer}", leave=False):
            inference.step(batch)
        train_seconds = time.perf_counter() - clock
        estimator = "elbo" if vae else "exact"
        clock = time.perf_counter()
        report = evaluate(inference, test, estimator, batch_size=64).summary()
        eval_seconds = time.perf_counter() - clock
        rows[layer] = {
            "nll": report["nll"],
            "ppl": report["corpus_perplexity"],
            "kl": report.get("kl", 0.0),
            "train_seconds": train_seconds,
            "train_tokens_per_s": train_tokens / train_seconds,
            "eval_tokens_per_s": test.num_tokens / eval_seconds,
            "training_estimator": story.decoder.out.estimator,
        }
        print(layer, rows[layer], flush=True)
    base = rows[args.layers[0]]
    lines = [
        f"| output layer | test NLL ({'ELBO' if vae else 'exact'}) | test PPL | PPL vs {args.layers[0]} | "
        "train tokens/s | train speed ratio | eval tokens/s | eval speed ratio | trained on |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for layer, r in rows.items():
        lines.append(
            f"| {layer} | {r['nll']:.2f} | {r['ppl']:.1f} | {100 * (r['ppl'] / base['ppl'] - 1):+.1f}% | "
            f"{r['train_tokens_per_s']:.0f} | {r['train_tokens_per_s'] / base['train_tokens_per_s']:.2f}x | "
            f"{r['eval_tokens_per_s']:.0f} | {r['eval_tokens_per_s'] / base['eval_tokens_per_s']:.2f}x | "
            f"{r['training_estimator']} |"
        )
    lines.append(
        f"\nEach layer: the same {len(batches)} steps of 32 PTB training sentences ({train_tokens} tokens, "
        f"{len(batches) / train.num_batches(32):.2f} of an epoch), SGD lr 1, clip 5, dropout 0.3"
        + (f", KL annealing {args.anneal} and 0.2 free nats" if vae else "")
        + f"; {args.embed_dim}-d embeddings, {args.hidden_dim}-d LSTM; test split, {test.num_tokens} tokens."
    )
    return {"rows": rows, "settings": vars(args)}, "\n".join(lines)


def quora_30k(data_dir: str) -> TextCorpus:
    """The Quora questions of the shared CGMH material read with CGMH's own 30,000-word Quora
    vocabulary (``cgmh/vocab/quora_vocab.txt``, ids after fabula's four specials)."""
    folder = Path(data_dir) / "cgmh"
    words = (folder / "vocab" / "quora_vocab.txt").read_text(encoding="utf-8").split("\n")
    vocab = TextVocab([*SPECIALS, *(w for w in words if w and w not in SPECIALS)])
    return TextCorpus.from_file(folder / "quora" / "test.txt", vocab)


def speed(args) -> tuple[dict, str]:
    """Interleaved timings of the RNNLM's training step and exact evaluation per layer."""
    if args.data == "quora-30k":
        corpus = quora_30k(args.data_dir)
    else:
        splits = load_dataset(args.data, args.data_dir, download=False)
        corpus = splits["train" if "train" in splits else "test"]
    vocab_size = len(corpus.vocab)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(corpus), generator=generator)[: args.timed_batches * 32]
    batches = [corpus.batch(order[i : i + 32]) for i in range(0, len(order), 32)]
    tokens = sum(int(b.lengths.sum()) for b in batches)
    stories = {}
    for layer in args.layers:
        torch.manual_seed(0)
        story = RNNLM(vocab_size, args.embed_dim, args.hidden_dim, output=layer)
        story.fit_output(corpus)
        stories[layer] = story
    times = {layer: {"train": [], "eval": []} for layer in args.layers}
    for _ in range(args.rounds):
        for layer, story in stories.items():
            optimizer = torch.optim.SGD(story.parameters(), lr=0.1)
            clock = time.perf_counter()
            for batch in batches:
                optimizer.zero_grad()
                (-story.log_prob(batch).sum()).backward()
                optimizer.step()
            times[layer]["train"].append(time.perf_counter() - clock)
            with torch.no_grad(), evaluation_mode(story):
                clock = time.perf_counter()
                for batch in batches:
                    story.log_prob(batch)
                times[layer]["eval"].append(time.perf_counter() - clock)
    rows = {
        layer: {part: tokens / statistics.median(seconds) for part, seconds in t.items()}
        for layer, t in times.items()
    }
    base = rows[args.layers[0]]
    lines = [
        f"| output layer | train tokens/s | ratio to {args.layers[0]} | eval tokens/s | ratio to {args.layers[0]} |",
        "|---|---|---|---|---|",
    ]
    for layer, r in rows.items():
        lines.append(
            f"| {layer} | {r['train']:.0f} | {r['train'] / base['train']:.2f}x | {r['eval']:.0f} | "
            f"{r['eval'] / base['eval']:.2f}x |"
        )
    lines.append(
        f"\n{args.data}: {vocab_size} words; {len(batches)} batches of 32 sentences ({tokens} tokens) per "
        f"timing, medians of {args.rounds} interleaved rounds; RNNLM {args.embed_dim}-d embeddings, "
        f"{args.hidden_dim}-d LSTM."
    )
    return {"rows": rows, "vocab_size": vocab_size, "tokens": tokens, "settings": vars(args)}, "\n".join(
        lines
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["quality", "speed"], required=True)
    p.add_argument("--story", choices=["rnnlm", "lstm-vae"], default="rnnlm", help="quality: the story")
    p.add_argument(
        "--layers", nargs="+", default=list(LAYERS), help="output specs; the first is the baseline"
    )
    p.add_argument(
        "--data",
        default="ptb",
        choices=["ptb", "yahoo", "quora-30k"],
        help="speed: the corpus (quora-30k: CGMH's Quora questions with its 30,000-word vocabulary)",
    )
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--epochs", type=int, default=2, help="quality: training epochs per layer")
    p.add_argument(
        "--decay-after", type=int, default=6, help="quality: epochs before the lr halves each epoch"
    )
    p.add_argument("--anneal", default="linear:200", help="quality, lstm-vae: KL annealing schedule")
    p.add_argument("--embed-dim", type=int, default=353)
    p.add_argument("--hidden-dim", type=int, default=191)
    p.add_argument("--steps", type=int, default=STEPS, help="quality: training steps per layer")
    p.add_argument("--timed-batches", type=int, default=20, help="speed: batches per timing")
    p.add_argument("--rounds", type=int, default=5, help="speed: interleaved rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    with session(p, argv, steps=2, timed_batches=2, rounds=1, embed_dim=16, hidden_dim=16) as args:
        torch.set_num_threads(args.threads)
        results, table = (quality if args.part == "quality" else speed)(args)
        print(table)
        if not args.no_record:
            # a run of another budget is recorded beside the default one, not over it
            budget = "" if args.steps == STEPS else f"_{args.steps}_steps"
            name = (
                f"output_layers_{args.story}{budget}"
                if args.part == "quality"
                else f"output_layers_speed_{args.data}"
            )
            record(name, results, table)
        return results


if __name__ == "__main__":
    main()
