"""An LSTM sentence VAE on the SA-VAE synthetic oracle corpus, with the collapse remedies as
settings of the inference object: KL annealing, word dropout and free bits (all on by default:
without free bits this VAE collapses, KL 0 and every homotopy line alike). Prints the test bounds
beside the oracle's own, samples from the prior, and a homotopy between two sentences.

    python examples/sentence_vae.py                    # synthetic corpus, no download (about a minute)
    python examples/sentence_vae.py --free-bits 0      # the collapse the remedies prevent
"""

from __future__ import annotations

import argparse

import torch

from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.devices import cpu_threads
from fabula.evaluation import ImportanceWeighted, evaluate
from fabula.generation import greedy, homotopy, sample
from fabula.guides import SentenceGuide
from fabula.inference import Amortized, FreeBitsELBO
from fabula.inference.annealing import Linear
from fabula.models import LSTMVAE
from fabula.run import fit_reference


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--hidden-dim", type=int, default=128)
    p.add_argument("--word-dropout", type=float, default=0.2)
    p.add_argument("--free-bits", type=float, default=0.5, help="nats per latent coordinate (0: none)")
    p.add_argument("--iw-samples", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(cpu_threads())  # as the fabula command: FABULA_THREADS, else half the cores

    torch.manual_seed(0)
    data, oracle = synthetic_sentence_corpus()
    vocab = data["train"].vocab
    story = LSTMVAE(len(vocab), args.latent_dim, args.hidden_dim, args.hidden_dim)
    guide = SentenceGuide(len(vocab), args.latent_dim, args.hidden_dim, args.hidden_dim)
    steps = args.epochs * data["train"].num_batches(64)
    vi = Amortized(
        story,
        guide,
        annealing=Linear(max(1, steps // 2)),
        word_dropout=args.word_dropout,
        objective=FreeBitsELBO(args.free_bits) if args.free_bits else None,
        clip_norm=5.0,
    )
    vi.fit(data["train"], epochs=args.epochs, batch_size=64)

    reference = fit_reference(oracle, "sentences", data["train"], seed=0)
    results = {}
    for name, inference in (("LSTM-VAE", vi), ("oracle", reference)):
        r = evaluate(inference, data["test"], ImportanceWeighted(args.iw_samples)).summary()
        results[name] = r
    print(f"| model | test NLL (IW, S={args.iw_samples}) | PPL | KL | MI | AU |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['nll']:.2f} | {r['corpus_perplexity']:.1f} | {r['kl']:.2f} | {r['mi']:.2f} | "
            f"{r['active_units']} |"
        )

    print("\nsamples from the prior:")
    for ids in sample(story.decoder, story.prior_sample(3)["z"], max_length=12):
        print("  " + " ".join(vocab.decode(ids)))
    a, b = (data["test"].batch(torch.tensor([i])) for i in (0, 1))
    z = homotopy(vi.local_params(a)["loc"][0], vi.local_params(b)["loc"][0], 5)
    print("\nhomotopy between test sentences 0 and 1 (greedy decoding):")
    for ids in greedy(story.decoder, z, max_length=12):
        print("  " + " ".join(vocab.decode(ids)))
    return results


if __name__ == "__main__":
    main()
