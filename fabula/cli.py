"""The ``fabula`` command: train, evaluate and inspect generative stories of text."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from fabula.evaluation import ESTIMATORS, evaluate
from fabula.runs import STORIES, SYNTHETIC, TrainConfig, load_run, train

EXAMPLES = """examples:
  fabula train nvdm --out runs/demo                      # synthetic corpus, no download
  fabula train nvdm --data 20news --data-dir ../shared/data --epochs 100 --out runs/nvdm20
  fabula train nvdm --data 20news --epochs 5 --out runs/nvdm20 --resume
  fabula evaluate runs/nvdm20 --estimator iw --samples 500 --json
  fabula topics runs/nvdm20 --k 10
"""


def _threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def cmd_train(args) -> int:
    _threads(args)
    defaults = TrainConfig()
    config = TrainConfig(
        story=args.story,
        data=args.data,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        latent_dim=args.latent_dim,
        hidden=tuple(args.hidden) if args.hidden is not None else defaults.hidden,
        activation=args.activation,
        elbo=args.elbo,
        anneal=args.anneal,
        free_bits=args.free_bits,
        clip_norm=args.clip_norm,
        seed=args.seed,
        device=args.device,
    )
    history = train(config, args.out, resume=args.resume, progress=not args.quiet)
    for m in history:
        print(
            f"epoch {m['epoch']:4d}  loss {m['loss']:.2f}  test ppl (ELBO) {m['test_perplexity']:.1f}"
            f"  KL {m['test_kl']:.2f}  AU {m['test_active_units']}  {m['train_seconds']:.1f}s"
        )
    print(f"run written to {args.out} (checkpoint.safetensors, metrics.jsonl, curves.png)")
    return 0


def _table(rows: dict[str, dict]) -> str:
    keys = ["nll", "perplexity", "corpus_perplexity", "kl", "active_units"]
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    _threads(args)
    run = load_run(args.run, data_dir=args.data_dir, device=args.device)
    if args.split not in run.splits:
        raise SystemExit(f"no split {args.split!r}; the data has {sorted(run.splits)}")
    data = run.splits[args.split]
    report = evaluate(
        run.inference, data, args.estimator, args.samples, args.batch_size, progress=not args.json
    )
    result = {**report.summary(), "split": args.split, "epoch": run.metadata["epoch"]}
    if run.reference is not None:
        generator = evaluate(run.reference, data, args.estimator, args.samples, args.batch_size).summary()
        result["generator"] = generator
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    rows = {"trained": result}
    if run.reference is not None:
        rows["generating model"] = result["generator"]
    print(
        f"{args.run}: {args.split} split, {result['num_data']} documents, estimator {args.estimator} "
        f"(S={args.samples}); NLL in nats per document"
    )
    print(_table(rows))
    return 0


def cmd_topics(args) -> int:
    run = load_run(args.run, data_dir=args.data_dir)
    story = run.inference.story
    if not hasattr(story, "topics"):
        raise SystemExit(f"the {run.metadata['story']} story has no topics")
    for j, words in enumerate(story.topics(run.splits["train"].vocab.words, args.k)):
        print(f"z[{j}]\t" + " ".join(words))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fabula",
        description="Deep generative models of text as Pyro stories, fitted by swappable inference.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train",
        help="train a story on a corpus into a run directory",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("story", choices=sorted(STORIES), help="the generative story")
    t.add_argument(
        "--data",
        default=SYNTHETIC,
        help="dataset name: 'synthetic' (default; sampled from a fixed random NVDM, no download) or '20news'",
    )
    t.add_argument(
        "--data-dir",
        help="folder with local copies of the dataset (else it is downloaded and cached)",
    )
    t.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--epochs", type=int, default=30, help="total epochs (default: 30)")
    t.add_argument("--batch-size", type=int, default=64, help="documents per step (default: 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: 1e-3)")
    t.add_argument("--latent-dim", type=int, default=50, help="size of z (default: 50)")
    t.add_argument("--hidden", type=int, nargs="*", help="encoder hidden sizes (default: 500)")
    t.add_argument(
        "--activation",
        default="tanh",
        choices=["tanh", "relu", "softplus"],
        help="encoder activation (default: tanh)",
    )
    t.add_argument(
        "--elbo",
        default="meanfield",
        choices=["meanfield", "trace"],
        help="TraceMeanField_ELBO (analytic KL, default) or Trace_ELBO",
    )
    t.add_argument(
        "--anneal",
        help="KL annealing: linear:STEPS, logistic:RATE:MIDPOINT, cyclical:PERIOD[:RATIO]",
    )
    t.add_argument("--free-bits", type=float, help="free bits per latent coordinate (nats)")
    t.add_argument("--clip-norm", type=float, help="clip gradients to this global norm")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    t.add_argument("--threads", type=int, help="torch CPU threads")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="bound the NLL of a run's test data; report perplexity, KL, active units",
        epilog="example: fabula evaluate runs/demo --estimator iw --samples 500 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run", help="run directory written by 'fabula train'")
    e.add_argument(
        "--estimator",
        default="elbo",
        choices=ESTIMATORS,
        help="elbo: the variational bound; iw: importance-weighted bound with --samples (default: elbo)",
    )
    e.add_argument(
        "--samples", type=int, default=1, help="samples S from the guide per document (default: 1)"
    )
    e.add_argument("--split", default="test", help="data split (default: test)")
    e.add_argument("--data-dir", help="where the run's dataset lies now, if it moved")
    e.add_argument("--batch-size", type=int, default=200)
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, help="torch CPU threads")
    e.add_argument(
        "--json",
        action="store_true",
        help="print JSON (keys: perplexity, corpus_perplexity, nll, kl, active_units, estimator, samples, ...)",
    )
    e.set_defaults(func=cmd_evaluate)

    k = sub.add_parser(
        "topics",
        help="the top words of each latent dimension of a topic story",
        epilog="example: fabula topics runs/nvdm20 --k 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    k.add_argument("run", help="run directory")
    k.add_argument("--k", type=int, default=10, help="words per dimension (default: 10)")
    k.add_argument("--data-dir", help="where the run's dataset lies now, if it moved")
    k.set_defaults(func=cmd_topics)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as e:
        print(f"fabula {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
