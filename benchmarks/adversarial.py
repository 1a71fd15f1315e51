"""Adversarial training against maximum likelihood, on the same story and one table.

``--part oracle``: SeqGAN's synthetic setting (Yu et al. 2017, Table 1): an LSTM oracle with
N(0, 1) weights (embedding and hidden 32, 5,000 words, sentences of exactly 20 words, 10,000
training sentences). The generator (an RNNLM of the oracle's sizes) is fitted by maximum
likelihood, then fine-tuned by ``seqgan`` (and, beside it, ``gumbel-gan``); NLL_oracle, the
oracle's NLL per word of 10,000 of the generator's draws, is exact; beside it, the generator's
own exact NLL per token (words and ``<eos>``) of 2,000 held-out oracle sentences. Seeds vary the
generator's start and training; the oracle is one (seed 0), as in the paper.

``--part ptb``: the quality-diversity curve (Caccia et al. 2020) on PTB: an RNNLM fitted by
maximum likelihood, and the same RNNLM fine-tuned by ``seqgan`` and by ``gumbel-gan``, each swept
over softmax temperatures; at each, quality is the LM score (NLL per token of the draws under a
separately trained scorer LM) and corpus BLEU-4 against the test split, diversity the reverse LM
score (NLL per token of the test split under an LM trained on the draws) and Self-BLEU (each draw
against the others), beside each model's exact test NLL. One plot of the curves, one table.

``--part speed``: a SeqGAN generator step with 16 roll-outs per prefix at PTB sizes as a multiple
of a maximum-likelihood step of the same RNNLM, on the same batches, interleaved round by round.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import torch
from tqdm.auto import tqdm

from fabula.data import load_dataset
from fabula.data.text import SPECIALS, TextCorpus, TextVocab
from fabula.evaluation.bleu import sample_bleu
from fabula.evaluation.quality_diversity import lm_score, reverse_lm_score, self_bleu, train_language_model
from fabula.generation import sample
from fabula.guides import EmptyGuide
from fabula.inference import Amortized
from fabula.inference.adversarial import (
    Adversarial,
    AdversarialTraining,
    GumbelSoftmax,
    Reinforce,
    SentenceGenerator,
)
from fabula.models import RNNLM
from fabula.nn import evaluation_mode
from fabula.nn.discriminator import SentenceDiscriminator
from results_log import record, record_plot, session

TEMPERATURES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
BATCH = 64
"""Sentences per training step, maximum likelihood and adversarial."""


def seeded(seed: int) -> None:
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)


def adversarial(
    story, kind: str, args, critic_steps: int, fixed: bool, max_length: int
) -> AdversarialTraining:
    """``story`` fine-tuned by ``kind`` (no pre-training: it was fitted by maximum likelihood)."""
    loss = Reinforce(args.rollouts) if kind == "seqgan" else GumbelSoftmax(tau=1.0, tau_min=0.5, rate=1e-2)
    critic = SentenceDiscriminator(story.decoder.vocab_size, args.critic_dim, args.critic_dim)
    policy = Adversarial(
        critic, loss, pretrain=0, critic_steps=critic_steps, max_length=max_length, fixed=fixed
    )
    return AdversarialTraining(story, EmptyGuide(), policy, optim_args={"lr": args.adversarial_lr})


def fine_tune(gan: AdversarialTraining, train, steps: int, seed: int, desc: str) -> list[dict]:
    """``steps`` adversarial steps on the training batches of epochs 0, 1, ... of ``seed``."""
    gan.begin(train)
    history, epoch = [], 0
    bar = tqdm(total=steps, desc=desc, leave=False)
    while len(history) < steps:
        for batch in train.batches(BATCH, shuffle=True, seed=seed, epoch=epoch):
            history.append(gan.step(batch))
            bar.update()
            if len(history) == steps:
                break
        epoch += 1
    bar.close()
    return history


# --- the synthetic oracle ---------------------------------------------------------------------


def oracle_story(vocab_size: int, dim: int) -> RNNLM:
    """Yu et al.'s oracle: an LSTM language model whose weights are all N(0, 1) (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    oracle = RNNLM(vocab_size, dim, dim)
    with torch.no_grad():
        for p in oracle.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    return oracle.eval()


def drawn_words(story, num: int, length: int, chunk: int = 1000) -> list[list[int]]:
    """``num`` draws of exactly ``length`` words from ``story`` (``<eos>`` never drawn)."""
    generator = SentenceGenerator(story, length, fixed=True)
    out = []
    for start in range(0, num, chunk):
        out += generator.draw(min(chunk, num - start)).tokens[:, :length].tolist()
    return out


@torch.no_grad()
def nll_oracle(oracle, story, num: int, length: int, chunk: int = 1000) -> float:
    """The oracle's NLL per word of ``num`` draws of ``story`` (SeqGAN's NLL_oracle)."""
    scorer, drawer = (
        SentenceGenerator(oracle, length, fixed=True),
        SentenceGenerator(story, length, fixed=True),
    )
    total = 0.0
    for start in range(0, num, chunk):
        draw = drawer.draw(min(chunk, num - start))
        total += float(scorer.log_probs(draw).sum())
    return -total / (num * length)


@torch.no_grad()
def exact_nll(story, corpus) -> float:
    """The story's exact NLL per token (words and ``<eos>``) of ``corpus``."""
    with evaluation_mode(story):
        return lm_score(story, [corpus.sentence(i) for i in range(len(corpus))])


def oracle_part(args) -> tuple[dict, str]:
    vocab_size = args.vocab + len(SPECIALS) - 1  # <unk> is one of the oracle's words
    vocab = TextVocab([*SPECIALS, *(f"w{i:04d}" for i in range(len(SPECIALS), vocab_size))])
    oracle = oracle_story(vocab_size, args.dim)
    seeded(12345)
    words = drawn_words(oracle, args.train + args.held_out, args.length)
    train = TextCorpus(words[: args.train], vocab, "oracle/train")
    held_out = TextCorpus(words[args.train :], vocab, "oracle/held-out")
    rows = {}
    for seed in range(args.seeds):
        seeded(seed)
        story = RNNLM(vocab_size, args.dim, args.dim)
        row = {"random": {"nll_oracle": nll_oracle(oracle, story, args.draws, args.length)}}
        row["random"]["held_out_nll"] = exact_nll(story, held_out)
        mle = Amortized(story, EmptyGuide(), optim_args={"lr": args.lr})
        clock = time.perf_counter()
        mle.fit(train, epochs=args.epochs, batch_size=BATCH, seed=seed, progress=False)
        row["mle"] = {
            "nll_oracle": nll_oracle(oracle, story, args.draws, args.length),
            "held_out_nll": exact_nll(story, held_out),
            "seconds": time.perf_counter() - clock,
        }
        for kind in ("seqgan", "gumbel-gan"):
            tuned = copy.deepcopy(story)
            seeded(1000 + seed)
            gan = adversarial(tuned, kind, args, args.critic_steps, fixed=True, max_length=args.length)
            clock = time.perf_counter()
            history = fine_tune(gan, train, args.steps, seed, f"{kind} seed {seed}")
            row[kind] = {
                "nll_oracle": nll_oracle(oracle, tuned, args.draws, args.length),
                "held_out_nll": exact_nll(tuned, held_out),
                "seconds": time.perf_counter() - clock,
                "last_reward": statistics.mean(h["reward"] for h in history[-10:]),
                "last_critic_loss": statistics.mean(h["critic_loss"] for h in history[-10:]),
            }
        rows[seed] = row
        print(f"seed {seed}: " + ", ".join(f"{k} {v['nll_oracle']:.3f}" for k, v in row.items()))
    models = ("random", "mle", "seqgan", "gumbel-gan")
    summary = {}
    for model in models:
        for figure in ("nll_oracle", "held_out_nll"):
            values = [rows[s][model][figure] for s in rows]
            summary.setdefault(model, {})[figure] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    gaps = [rows[s]["seqgan"]["nll_oracle"] - rows[s]["mle"]["nll_oracle"] for s in rows]
    lines = [
        f"Oracle: LSTM, embedding and hidden {args.dim}, N(0, 1) weights, {args.vocab} words, "
        f"{args.length} words per sentence; {args.train} training and {args.held_out} held-out "
        f"sentences; generator of the same sizes, {args.epochs} epochs of maximum likelihood (Adam "
        f"{args.lr}, batches of 64), then {args.steps} adversarial steps (Adam {args.adversarial_lr}, "
        f"{args.critic_steps} critic steps per generator step, {args.rollouts} roll-outs); NLL_oracle "
        f"over {args.draws} draws. Median [min, max] over {args.seeds} seeds.",
        "",
        "| model | NLL_oracle (nats/word) | exact NLL of held-out oracle data (nats/token) | Yu et al. NLL_oracle |",
        "|---|---|---|---|",
    ]
    paper = {"random": "10.310", "mle": "9.038", "seqgan": "8.736", "gumbel-gan": ""}
    for model in models:
        o, h = summary[model]["nll_oracle"], summary[model]["held_out_nll"]
        lines.append(
            f"| {model} | {o['median']:.3f} [{o['min']:.3f}, {o['max']:.3f}] | "
            f"{h['median']:.3f} [{h['min']:.3f}, {h['max']:.3f}] | {paper[model]} |"
        )
    lines += [
        "",
        f"SeqGAN minus MLE, NLL_oracle per seed: {', '.join(f'{g:+.3f}' for g in gaps)} "
        f"(median {statistics.median(gaps):+.3f}).",
    ]
    return {"rows": rows, "summary": summary, "seqgan_minus_mle": gaps}, "\n".join(lines)


# --- the quality-diversity curve on PTB -------------------------------------------------------


def draws(story, num: int, temperature: float, max_length: int, chunk: int = 500) -> list[list[int]]:
    out = []
    with evaluation_mode(story):
        for start in range(0, num, chunk):
            out += sample(
                story.decoder, num=min(chunk, num - start), max_length=max_length, temperature=temperature
            )
    return out


def dominated_gap(mle_points: list[tuple[float, float]], point: tuple[float, float]) -> float | None:
    """MLE's reverse LM score at ``point``'s LM score (linear interpolation along the MLE curve)
    minus ``point``'s: negative where MLE with a temperature is more diverse at equal quality;
    ``None`` outside the MLE curve's range."""
    curve = sorted(mle_points)
    quality, diversity = point
    for (q0, d0), (q1, d1) in zip(curve, curve[1:], strict=False):
        if q0 <= quality <= q1:
            t = 0.0 if q1 == q0 else (quality - q0) / (q1 - q0)
            return d0 + t * (d1 - d0) - diversity
    return None


def ptb_part(args) -> tuple[dict, str, object]:
    splits = load_dataset("ptb", args.data_dir, download=False)
    train, test = splits["train"], splits["test"]
    vocab = train.vocab
    sentences = [train.sentence(i) for i in range(len(train))]
    test_sentences = [test.sentence(i) for i in range(len(test))]
    common = dict(embed_dim=args.dim, hidden_dim=args.dim, epochs=args.epochs, lr=args.lr, output=args.output)
    scorer = train_language_model(sentences, vocab, seed=100, **common)
    mle = train_language_model(sentences, vocab, seed=0, **common)
    models = {"mle": mle}
    histories = {}
    for kind in ("seqgan", "gumbel-gan"):
        tuned = copy.deepcopy(mle).train()
        seeded(1)
        gan = adversarial(tuned, kind, args, args.critic_steps, fixed=False, max_length=args.max_length)
        clock = time.perf_counter()
        histories[kind] = fine_tune(gan, train, args.steps, 0, kind)
        histories[kind + "_seconds"] = time.perf_counter() - clock
        models[kind] = tuned.eval()
    rows = {}
    for name, story in models.items():
        rows[name] = {"test_nll": exact_nll(story, test), "points": []}
        for temperature in tqdm(args.temperatures, desc=name, leave=False):
            seeded(7)
            drawn = draws(story, args.samples, temperature, args.max_length)
            rows[name]["points"].append(
                {
                    "temperature": temperature,
                    "lm_score": lm_score(scorer, drawn),
                    "reverse_lm_score": reverse_lm_score(
                        drawn,
                        test_sentences,
                        vocab,
                        embed_dim=args.dim,
                        hidden_dim=args.dim,
                        epochs=args.reverse_epochs,
                        lr=args.lr,
                        output=args.output,
                        seed=0,
                    ),
                    "bleu4": sample_bleu(drawn[: args.bleu_samples], test_sentences),
                    "self_bleu4": self_bleu(drawn[: args.bleu_samples]),
                    "mean_words": statistics.mean(len(s) for s in drawn),
                }
            )
    mle_points = [(p["lm_score"], p["reverse_lm_score"]) for p in rows["mle"]["points"]]
    for name in ("seqgan", "gumbel-gan"):
        for p in rows[name]["points"]:
            p["mle_minus_this_at_equal_quality"] = dominated_gap(
                mle_points, (p["lm_score"], p["reverse_lm_score"])
            )
    lines = [
        f"PTB; RNNLMs with {args.dim}-d embeddings and LSTM, {args.output} output layer, {args.epochs} "
        f"epochs of maximum likelihood (Adam {args.lr}); the scorer LM the same, another seed. "
        f"seqgan and gumbel-gan: {args.steps} adversarial steps from the MLE model (Adam "
        f"{args.adversarial_lr}, batches of 64, {args.critic_steps} critic step per generator step, "
        f"{args.rollouts} roll-outs, at most {args.max_length} words). Per temperature: "
        f"{args.samples} draws; reverse LM trained on them {args.reverse_epochs} epochs; corpus "
        f"BLEU-4 and Self-BLEU-4 of the first {args.bleu_samples}. One seed (one training run per model).",
        "",
        "| model | exact test NLL (nats/token) | T | LM score | reverse LM score | BLEU-4 | Self-BLEU-4 | words | MLE's reverse LM at equal LM score, minus this |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        for p in row["points"]:
            gap = p.get("mle_minus_this_at_equal_quality")
            shown = "" if name == "mle" else ("outside" if gap is None else f"{gap:+.3f}")
            lines.append(
                f"| {name} | {row['test_nll']:.3f} | {p['temperature']:.1f} | {p['lm_score']:.3f} | "
                f"{p['reverse_lm_score']:.3f} | {p['bleu4']:.1f} | {p['self_bleu4']:.1f} | {p['mean_words']:.1f} | {shown} |"
            )
    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name, row in rows.items():
        xs = [p["lm_score"] for p in row["points"]]
        ys = [p["reverse_lm_score"] for p in row["points"]]
        axis.plot(xs, ys, marker="o", label=name)
        for p in row["points"][:: max(1, len(row["points"]) // 4)]:
            axis.annotate(f"T={p['temperature']:.1f}", (p["lm_score"], p["reverse_lm_score"]), fontsize=7)
    axis.set_xlabel("LM score (nats/token; lower: better quality)")
    axis.set_ylabel("reverse LM score (nats/token; lower: more diverse)")
    axis.set_title("PTB quality-diversity: temperature sweeps")
    axis.legend()
    figure.tight_layout()
    return {"rows": rows, "histories": histories}, "\n".join(lines), figure


# --- speed --------------------------------------------------------------------------------------


def speed_part(args) -> tuple[dict, str]:
    splits = load_dataset("ptb", args.data_dir, download=False)
    train = splits["train"]
    batches = list(train.batches(32, shuffle=True, seed=0, epoch=0))[: args.timed_batches]
    seeded(0)
    story = RNNLM(len(train.vocab), args.dim, args.dim)
    mle = Amortized(story, EmptyGuide(), optim_args={"lr": 1e-3})
    gan = adversarial(
        story, "seqgan", argparse.Namespace(**{**vars(args), "rollouts": 16}), 1, False, args.max_length
    )
    generator = SentenceGenerator(story, args.max_length)
    policy, trainer = gan.updates, gan.trainer
    times = {"mle": [], "seqgan": []}
    for _ in range(args.rounds):
        for batch in batches:
            clock = time.perf_counter()
            mle.step(batch)
            times["mle"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            trainer.descend(
                lambda b=batch: policy.generator_loss.loss(generator, policy.critic, b.size, 0)[0],
                "generator",
                step=1,
            )
            times["seqgan"].append(time.perf_counter() - clock)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["seqgan"] / medians["mle"]
    table = (
        f"PTB, {len(train.vocab)} words; RNNLM with {args.dim}-d embeddings and LSTM, full softmax; batches of 32 "
        f"sentences; {args.rounds} rounds over {len(batches)} batches, a maximum-likelihood step and a SeqGAN "
        f"generator step (16 roll-outs per prefix, at most {args.max_length} words; its draws are of 32 new "
        "sentences) interleaved batch by batch.\n\n"
        "| step | median seconds | x MLE |\n|---|---|---|\n"
        f"| maximum likelihood | {medians['mle']:.4f} | 1.00x |\n"
        f"| SeqGAN generator, 16 roll-outs | {medians['seqgan']:.3f} | {ratio:.0f}x |"
    )
    return {"medians": medians, "ratio": ratio, "times": times}, table


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["oracle", "ptb", "speed"], default="oracle")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--seeds", type=int, default=3, help="oracle: generator seeds")
    p.add_argument("--vocab", type=int, default=5000, help="oracle: words")
    p.add_argument("--length", type=int, default=20, help="oracle: words per sentence")
    p.add_argument("--train", type=int, default=10000, help="oracle: training sentences")
    p.add_argument("--held-out", type=int, default=2000, help="oracle: held-out sentences")
    p.add_argument("--draws", type=int, default=10000, help="oracle: draws scored by the oracle")
    p.add_argument(
        "--dim", type=int, default=32, help="embedding and LSTM size (oracle: 32; ptb, speed: give 128)"
    )
    p.add_argument("--epochs", type=int, default=20, help="maximum-likelihood epochs")
    p.add_argument("--lr", type=float, default=1e-2, help="maximum likelihood's Adam step size")
    p.add_argument("--steps", type=int, default=100, help="adversarial steps")
    p.add_argument(
        "--adversarial-lr", type=float, default=1e-3, help="the generator's and critic's Adam step size"
    )
    p.add_argument("--critic-steps", type=int, default=3, help="critic steps per generator step")
    p.add_argument("--critic-dim", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16)
    p.add_argument("--output", default="class", help="ptb: the output layer")
    p.add_argument("--max-length", type=int, default=50, help="ptb, speed: the most words of a draw")
    p.add_argument("--temperatures", type=float, nargs="+", default=list(TEMPERATURES))
    p.add_argument("--samples", type=int, default=2000, help="ptb: draws per temperature")
    p.add_argument("--bleu-samples", type=int, default=1000, help="ptb: draws scored by BLEU and Self-BLEU")
    p.add_argument("--reverse-epochs", type=int, default=3, help="ptb: epochs of the reverse LM")
    p.add_argument("--timed-batches", type=int, default=5, help="speed: batches per round")
    p.add_argument("--rounds", type=int, default=3, help="speed: rounds")
    tiny = dict(
        seeds=1,
        vocab=30,
        length=6,
        train=64,
        held_out=16,
        draws=64,
        dim=8,
        epochs=1,
        steps=2,
        rollouts=2,
        critic_dim=8,
        samples=24,
        bleu_samples=12,
        reverse_epochs=1,
        temperatures=[0.8, 1.0],
        timed_batches=1,
        rounds=1,
        max_length=8,
    )
    with session(p, argv, **tiny) as args:
        torch.set_num_threads(1)
        if args.part == "oracle":
            results, table = oracle_part(args)
            name = "adversarial_oracle"
        elif args.part == "ptb":
            results, table, figure = ptb_part(args)
            name = "adversarial_ptb"
            with tempfile.TemporaryDirectory() as folder:
                figure.savefig(Path(folder) / "curve.png", dpi=120)
                record_plot(name, Path(folder) / "curve.png")
        else:
            results, table = speed_part(args)
            name = "adversarial_speed"
        print(table)
        record(name, results, table)
    return results


if __name__ == "__main__":
    main()
