"""A one-shot check of fabula on a GPU, within about 8 minutes on one H100 or H200: every part
on ``--device``, each figure beside its same-run reference.

1. **suite**: the tests that take the suite's device (devices and precision, data parallelism,
   every story-guide-inference pair, Pyro idioms) with ``FABULA_DEVICE`` set to ``--device``;
2. **throughput**: LSTM-VAE training tokens per second at Kim et al.'s (2018) sizes (512-d
   embeddings, a 1,024-unit LSTM encoder and decoder, 32-d z; ``--vocab`` words, sentences of
   ``--length`` words, batch ``--batch-size``) in each precision (fp32, tf32, bf16: fabula's
   ``--precision``), fabula's ``Amortized`` beside a plain-PyTorch loop of the same networks
   and loss (ratio of median step times; target <= 1.10), and the share of the device's dense
   bf16 peak that bf16 reaches (target >= 40%). FLOPs per token are counted as 6 (forward and
   backward) times the weights of every matrix but the embeddings, each applied once per token
   (the encoder's per-sentence output layer, a fraction of a percent, is counted as if per token);
3. **SA-VAE**: one training step with K = ``--k`` refinement steps (exact and finite-difference
   Hessian-vector products) against one VAE step at those sizes (Kim et al. report 74x and 41x;
   target <= 30x);
4. **NUTS**: NumPyro's NUTS (the hand-written JAX twins), vectorized over ``--items``
   documents, on JAX's GPU against its CPU, for an NVDM trained on the synthetic corpus (z = 50)
   and the synthetic oracle LSTM-VAE's posterior (z = 2); ESS per second per document with
   compile time included (JAX without a GPU: the CPU row alone);
5. **DDP**: ``torchrun --nproc-per-node N -m fabula train nvdm`` on the N devices there are
   (gloo on the CPU), beside one process without torchrun.

Under ``--smoke`` the sizes are tiny, the suite is its device-naming check only and DDP runs in
one process: every step runs, on any device, in seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mcmc_backends import min_ess, oracle_run
from overhead import plain_lstm_vae_loss

from fabula.data import synthetic_nvdm_corpus
from fabula.data.text import SPECIALS, TextCorpus, TextVocab
from fabula.devices import autocast, resolve, set_precision, tensor_cores
from fabula.guides import SentenceGuide
from fabula.inference import MCMC, Amortized, Refinement, SemiAmortized
from fabula.inference.kernels import NumPyroNUTS
from fabula.models import LSTMVAE
from fabula.run import TrainConfig, load_run, train
from results_log import record, session, synthetic_sizes

ROOT = Path(__file__).resolve().parents[1]
SUITE = [  # the tests that take the suite's device (the `device` fixture)
    "tests/test_devices.py",
    "tests/test_distributed.py",
    "tests/test_adversarial.py::test_an_adversarial_step_on_the_device",
    "tests/test_inference.py::test_every_story_guide_inference_pair_takes_a_step",
    "tests/test_pyro_idioms.py::test_predictive_on_the_unconditioned_story_draws_fresh_data",
    "tests/test_pyro_idioms.py::test_predictive_on_the_story_keeps_its_observation_as_obs_means",
    "tests/test_pyro_idioms.py::test_an_unconditioned_trace_scores_its_own_draw",
    "tests/test_quality_diversity.py::test_language_model_on_the_device",
]
SMOKE_SUITE = ["tests/test_devices.py", "-k", "named_device or forms_it_looks_for"]
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # FLOP/s, no sparsity
PRECISIONS = ("fp32", "tf32", "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def suite(args) -> dict:
    """The device-relevant tests with ``FABULA_DEVICE`` = ``--device``: counts from pytest's summary."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *(SMOKE_SUITE if args.smoke else SUITE),
    ]
    env = {**os.environ, "FABULA_DEVICE": args.device}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    if args.smoke and done.returncode != 0:
        raise RuntimeError(f"the device tests failed: {summary}")
    return {
        "returncode": done.returncode,
        "summary": summary,
        **counts,
        "seconds": time.perf_counter() - start,
    }


def random_corpus(vocab: int, length: int, num: int, seed: int = 0) -> TextCorpus:
    """``num`` sentences of ``length`` uniformly drawn words (one length: no padding to hide)."""
    words = TextVocab([*SPECIALS, *(f"w{i}" for i in range(len(SPECIALS), vocab))])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIALS), vocab, (num, length), generator=gen)
    return TextCorpus(ids.tolist(), words, name="random")


def flops_per_token(story, guide) -> float:
    """6 x the weights of every matrix but the embeddings (module docstring)."""
    embeddings = {
        id(m.weight) for m in [*story.modules(), *guide.modules()] if isinstance(m, torch.nn.Embedding)
    }
    weights = [
        p for p in [*story.parameters(), *guide.parameters()] if p.dim() == 2 and id(p) not in embeddings
    ]
    return 6.0 * sum(p.numel() for p in weights)


def lstm_vae(args, device):
    torch.manual_seed(0)
    story = LSTMVAE(args.vocab, args.latent_dim, args.embed_dim, args.hidden_dim)
    guide = SentenceGuide(args.vocab, args.latent_dim, args.embed_dim, args.hidden_dim)
    return story.to(device), guide.to(device)


def median_step(step, batches, device, warmup: int = 2) -> float:
    """Median seconds of ``step(batch)`` over ``batches`` after ``warmup`` untimed steps."""
    times = []
    for i, batch in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        step(batch)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(args, device) -> dict:
    """Tokens per second of fabula and of a plain loop in each precision (module docstring)."""
    data = random_corpus(args.vocab, args.length, args.batch_size * (args.steps + 2))
    batches = list(data.batches(args.batch_size, device=device))
    tokens = sum(int(b.mask.sum()) for b in batches) / len(batches)
    story, guide = lstm_vae(args, device)
    flops = flops_per_token(story, guide)
    peak = next(
        (
            v
            for k, v in DENSE_BF16_PEAK.items()
            if device.type == "cuda" and k in torch.cuda.get_device_name(device)
        ),
        None,
    )
    rows = {}
    for precision in PRECISIONS:
        if precision == "tf32" and device.type != "cuda":
            rows[precision] = {"skipped": "TF32 is a CUDA mode"}
            continue
        set_precision(device, precision)
        inference = Amortized(copy.deepcopy(story), copy.deepcopy(guide), optim_args={"lr": 1e-3})
        inference.trainer.configure(device, precision)
        plain_story, plain_guide = copy.deepcopy(story), copy.deepcopy(guide)
        optimizer = torch.optim.Adam([*plain_story.parameters(), *plain_guide.parameters()], lr=1e-3)

        def plain_step(
            batch, precision=precision, plain_story=plain_story, plain_guide=plain_guide, optimizer=optimizer
        ):
            with tensor_cores(precision):
                with autocast(device, precision):
                    loss = plain_lstm_vae_loss(plain_story, plain_guide, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()

        seconds = {"fabula": [], "plain": []}
        for _ in range(2):  # taking turns, so that the load falls on both alike
            seconds["fabula"].append(median_step(inference.step, batches, device))
            seconds["plain"].append(median_step(plain_step, batches, device))
        fabula, plain = min(seconds["fabula"]), min(seconds["plain"])
        rows[precision] = {
            "fabula_tokens_per_second": tokens / fabula,
            "plain_tokens_per_second": tokens / plain,
            "ratio": fabula / plain,
            "tflops": tokens / fabula * flops / 1e12,
            "bf16_peak_share": tokens / fabula * flops / peak if peak else None,
        }
    set_precision(device, "fp32")
    return {"tokens_per_batch": tokens, "flops_per_token": flops, "bf16_peak": peak, "rows": rows}


def savae(args, device) -> dict:
    """Median seconds of one VAE step and one SA-VAE step (K = ``--k``) at the same sizes."""
    data = random_corpus(args.vocab, args.length, args.batch_size * (args.savae_steps + 2), seed=1)
    batches = list(data.batches(args.batch_size, device=device))
    story, guide = lstm_vae(args, device)
    seconds = {"vae": median_step(Amortized(story, guide).step, batches, device)}
    for hvp in ("exact", "finite-difference"):
        story, guide = lstm_vae(args, device)
        inference = SemiAmortized(story, guide, Refinement(steps=args.k, lr=1.0, hvp=hvp))
        seconds[f"sa-vae {hvp}"] = median_step(inference.step, batches, device)
    return {"k": args.k, "seconds": seconds, "ratios": {k: v / seconds["vae"] for k, v in seconds.items()}}


def nvdm_posterior(args, device, folder: Path):
    """An NVDM (z = 50, or tiny under ``--smoke``) trained on the synthetic corpus."""
    sizes = {"latent_dim": 2, "hidden": (8,)} if args.smoke else {"latent_dim": 50, "hidden": (500,)}
    config = TrainConfig.create("nvdm", epochs=args.nvdm_epochs, device=str(device), reference=False, **sizes)
    train(config, folder / "nvdm", progress=False)
    return load_run(folder / "nvdm", device=device)


def nuts(args, device, folder: Path) -> dict:
    """NumPyro NUTS on JAX's CPU and (where JAX has one) GPU, ESS/s per document with compile."""
    import jax

    platforms = {"cpu": jax.devices("cpu")[0]}
    if jax.default_backend() == "gpu":
        platforms["gpu"] = jax.devices("gpu")[0]
    posteriors = {
        "nvdm": nvdm_posterior(args, device, folder),
        "lstm-vae oracle": oracle_run(**synthetic_sizes(args)),
    }
    out = {"jax_backend": jax.default_backend(), "items": args.items}
    for name, run in posteriors.items():
        story, guide = run.inference.story, run.inference.guide
        batch = run.splits["test"].batch(torch.arange(args.items), story.device)
        rows = {}
        for platform, jax_device in platforms.items():
            with jax.default_device(jax_device):
                mcmc = MCMC(
                    story,
                    guide,
                    args.samples,
                    args.warmup,
                    1,
                    progress=False,
                    kernel=NumPyroNUTS(twin="hand"),
                )
                chains = mcmc.run(batch)
            total = mcmc.seconds["compile"] + mcmc.seconds["sample"]
            ess = min_ess(chains.samples["z"])
            rows[platform] = {
                "compile": mcmc.seconds["compile"],
                "total": total,
                "median_ess": float(ess.median()),
                "ess_per_second_per_doc": float(ess.median()) / (total / args.items),
            }
        if "gpu" in rows:
            rows["gpu_over_cpu"] = (
                rows["gpu"]["ess_per_second_per_doc"] / rows["cpu"]["ess_per_second_per_doc"]
            )
        out[name] = rows
    return out


# each shipped story at its benchmark's sizes: (story, vocabulary size, settings)
BENCHMARK_SIZES = {
    "nvdm, 20news": ("nvdm", 2000, {}),
    "sbn (nvil), 20news": ("sbn", 2000, {"hidden": ()}),
    "rsm, 20news": ("rsm", 2000, {}),
    "rnnlm, ptb": ("rnnlm", 10000, {"embed_dim": 353, "hidden_dim": 191}),
    "lstm-vae, ptb": ("lstm-vae", 10000, {"embed_dim": 353, "hidden_dim": 191, "latent_dim": 13}),
    "gmvae, ptb": (
        "gmvae",
        10000,
        {"embed_dim": 353, "hidden_dim": 191, "num_components": 5, "num_pairs": 20, "latent_dim": 2},
    ),
    "lstm-vae, Kim et al.'s Yahoo": (
        "lstm-vae",
        20000,
        {"embed_dim": 512, "hidden_dim": 1024, "latent_dim": 32},
    ),
}


def allreduce(args) -> dict:
    """Bytes DDP all-reduces per step for each shipped story at its benchmark's sizes: 4 bytes
    (float32 gradients, whatever ``--precision``) per trained parameter of its default inference
    kind's modules (NVIL's baseline included)."""
    from fabula.inference.kinds import build
    from fabula.run import inference_setup
    from fabula.run.stories import recipe

    rows = {}
    for name, (story_name, vocab, sizes) in BENCHMARK_SIZES.items():
        r = recipe(story_name)
        if r.reads == "documents":
            splits = synthetic_nvdm_corpus(num_train=4, num_test=2, vocab_size=vocab, latent_dim=2)[0]
        else:
            splits = {k: random_corpus(vocab, 3, 4) for k in ("train", "valid", "test")}
        config = TrainConfig.create(story_name, **sizes)
        story, guide = r.build(config.model, splits["train"])
        inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
        params = {id(p): p for m in inference.modules().values() for p in m.parameters() if p.requires_grad}
        count = sum(p.numel() for p in params.values())
        rows[name] = {"inference": config.inference.inference, "parameters": count, "bytes": 4 * count}
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp(args, device, folder: Path) -> dict:
    """``fabula train nvdm`` in N processes under torchrun and in one without it."""
    world = 1 if args.smoke else torch.cuda.device_count() if device.type == "cuda" else 2
    sizes = (
        ["--latent-dim", "2", "--hidden", "8"] if args.smoke else ["--latent-dim", "50", "--hidden", "500"]
    )
    common = [
        "train",
        "nvdm",
        "--epochs",
        str(args.nvdm_epochs),
        "--device",
        device.type,
        "--no-reference",
        "--quiet",
        *sizes,
    ]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(world),
        "--master-port",
        str(free_port()),
    ]
    rows = {}
    for name, command in (
        (f"torchrun x{world}", [*launcher, "-m", "fabula", *common, "--out", str(folder / "ddp")]),
        ("one process", [sys.executable, "-m", "fabula", *common, "--out", str(folder / "single")]),
    ):
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed: {done.stderr.strip().splitlines()[-1]}")
        run = folder / ("ddp" if name != "one process" else "single") / "metrics.jsonl"
        history = [json.loads(line) for line in run.read_text().splitlines()]
        rows[name] = {
            "wall_seconds": time.perf_counter() - start,
            "epoch_seconds": statistics.median(m["train_seconds"] for m in history),
            "loss": history[-1]["loss"],
        }
    return {"world_size": world, "rows": rows}


def suite_table(results: dict) -> str:
    s = results["suite"]
    return f"Device: {results['device_name']}. Suite with FABULA_DEVICE={results['device']}: {s['summary']} ({s['seconds']:.0f} s)."


def throughput_table(results: dict) -> str:
    t = results["throughput"]
    lines = [
        f"Device: {results['device_name']}.",
        "",
        "| LSTM-VAE (Kim et al. sizes) | fabula tokens/s | plain tokens/s | fabula / plain time | TFLOP/s | share of bf16 peak |",
        "|---|---|---|---|---|---|",
    ]
    for precision, row in t["rows"].items():
        if "skipped" in row:
            lines.append(f"| {precision} | skipped: {row['skipped']} | | | | |")
            continue
        share = (
            f"{100 * row['bf16_peak_share']:.1f}%" if row["bf16_peak_share"] is not None else "peak unknown"
        )
        lines.append(
            f"| {precision} | {row['fabula_tokens_per_second']:.0f} | {row['plain_tokens_per_second']:.0f} | "
            f"{row['ratio']:.3f} | {row['tflops']:.2f} | {share} |"
        )
    return "\n".join(lines)


def savae_table(results: dict) -> str:
    v = results["savae"]
    lines = [f"| step (K = {v['k']}) | seconds | x VAE step |", "|---|---|---|"]
    lines += [f"| {k} | {sec:.4f} | {v['ratios'][k]:.1f} |" for k, sec in v["seconds"].items()]
    return "\n".join(lines)


def nuts_table(results: dict) -> str:
    n = results["nuts"]
    lines = [
        f"| NumPyro NUTS, {n['items']} documents vectorized | platform | compile s | total s | median ESS | ESS/s per document |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("nvdm", "lstm-vae oracle"):
        for platform in ("cpu", "gpu"):
            if platform in n[name]:
                r = n[name][platform]
                lines.append(
                    f"| {name} | {platform} | {r['compile']:.1f} | {r['total']:.1f} | {r['median_ess']:.0f} | {r['ess_per_second_per_doc']:.2f} |"
                )
    return "\n".join(lines)


def ddp_table(results: dict) -> str:
    d = results["ddp"]
    lines = ["| fabula train nvdm | wall s | median epoch s | last epoch loss |", "|---|---|---|---|"]
    lines += [
        f"| {k} | {r['wall_seconds']:.1f} | {r['epoch_seconds']:.2f} | {r['loss']:.2f} |"
        for k, r in d["rows"].items()
    ]
    return "\n".join(lines)


def allreduce_table(results: dict) -> str:
    lines = [
        "| story, benchmark sizes | inference | trained parameters | all-reduced MB per step |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['inference']} | {r['parameters']:,} | {r['bytes'] / 1e6:.1f} |"
        for name, r in results["allreduce"].items()
    ]
    return "\n".join(lines)


RUNS = {
    "suite": lambda args, device, folder: suite(args),
    "throughput": lambda args, device, folder: throughput(args, device),
    "savae": lambda args, device, folder: savae(args, device),
    "nuts": nuts,
    "ddp": ddp,
    "allreduce": lambda args, device, folder: allreduce(args),
}
PARTS = tuple(RUNS)
TABLES = {
    "suite": suite_table,
    "throughput": throughput_table,
    "savae": savae_table,
    "nuts": nuts_table,
    "ddp": ddp_table,
    "allreduce": allreduce_table,
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="device under check (default: cuda)")
    p.add_argument(
        "--vocab", type=int, default=20000, help="words (default: 20000, Kim et al.'s Yahoo vocabulary)"
    )
    p.add_argument("--length", type=int, default=60, help="words per sentence (default: 60)")
    p.add_argument(
        "--batch-size", type=int, default=32, help="sentences per step (default: 32, Kim et al.'s)"
    )
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--hidden-dim", type=int, default=1024)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps per loop and precision")
    p.add_argument("--k", type=int, default=20, help="SA-VAE refinement steps (default: 20)")
    p.add_argument("--savae-steps", type=int, default=3, help="timed SA-VAE steps per variant")
    p.add_argument("--items", type=int, default=100, help="documents per NUTS run (default: 100)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--nvdm-epochs", type=int, default=3)
    p.add_argument(
        "--parts", nargs="*", choices=PARTS, default=list(PARTS), help="what to check (default: all)"
    )
    tiny = dict(
        vocab=50,
        length=5,
        batch_size=4,
        embed_dim=8,
        hidden_dim=8,
        latent_dim=2,
        steps=3,
        k=2,
        savae_steps=1,
        items=2,
        warmup=5,
        samples=5,
        nvdm_epochs=1,
    )
    with session(p, argv, **tiny) as args:
        return benchmark(args)


def benchmark(args) -> dict:
    torch.set_num_threads(1)
    device = resolve(args.device)
    results = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        for part in args.parts:
            results[part] = RUNS[part](args, device, Path(folder))
    text = "\n\n".join(TABLES[part](results) for part in PARTS if part in results)
    print(text)
    record("gpu_check", results, text)
    return results


if __name__ == "__main__":
    main()
