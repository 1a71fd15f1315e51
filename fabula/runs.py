"""Training runs on disk: build a story, guide and inference object from a configuration,
train with per-epoch evaluation, checkpoints and curves, and load a run back.

A run directory holds ``checkpoint.safetensors`` (see :mod:`fabula.checkpoint`),
``metrics.jsonl`` (one line per epoch) and ``curves.png``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from fabula.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fabula.data import DataFormatError, load_dataset, synthetic_nvdm_corpus
from fabula.data.registry import DATASETS
from fabula.evaluation import evaluate
from fabula.guides import NormalGuide
from fabula.inference import Amortized, parse_schedule
from fabula.models import NVDM
from fabula.plots import plot_curves

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CURVES = "curves.png"

SYNTHETIC = "synthetic"


def new_nvdm(config: TrainConfig, train_corpus):
    """A fresh NVDM with the background of ``train_corpus`` and its encoder guide."""
    V = len(train_corpus.vocab)
    story = NVDM(V, config.latent_dim)
    story.init_background(train_corpus)
    guide = NormalGuide(V, config.latent_dim, hidden=list(config.hidden), activation=config.activation)
    return story, guide


STORIES = {"nvdm": (NVDM, NormalGuide, new_nvdm)}
"""Story name -> (story class, guide class, recipe for a fresh pair from a config and corpus)."""


def build(story_name: str, story_config: dict, guide_config: dict):
    """The story and guide of a saved run, from their ``config()``."""
    if story_name not in STORIES:
        raise ValueError(f"unknown story {story_name!r}; choose from {sorted(STORIES)}")
    story_cls, guide_cls, _ = STORIES[story_name]
    return story_cls(**story_config), guide_cls(**guide_config)


def load_data(data_config: dict, data_dir: str | Path | None = None):
    """``({split: corpus}, generator or None)`` for a run's data configuration."""
    name = data_config["name"]
    if name == SYNTHETIC:
        return synthetic_nvdm_corpus(seed=data_config["seed"])
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted([SYNTHETIC, *DATASETS])}")
    return load_dataset(name, data_dir or data_config.get("data_dir")), None


def check_vocabulary(splits: dict, metadata: dict) -> None:
    """Refuse data whose vocabulary differs from the one the run was trained on."""
    vocab = splits["train"].vocab
    want = metadata["vocab"]
    if vocab.sha256 != want["sha256"]:
        raise DataFormatError(
            splits["train"].name,
            f"vocabulary ({len(vocab)} words, sha256 {vocab.sha256[:12]}) differs from the "
            f"checkpoint's ({want['size']} words, sha256 {want['sha256'][:12]})",
        )


def reference_inference(generator) -> Amortized:
    """Amortized VI for the (frozen) generating story of a synthetic corpus, so that its NLL
    can be bounded with the same estimators as the trained model's."""
    guide = NormalGuide(generator.vocab_size, generator.latent_dim, hidden=[200])
    return Amortized(generator, guide, learn_story=False, optim_args={"lr": 3e-3})


def fit_reference(generator, train, seed: int, epochs: int = 30) -> Amortized:
    """:func:`reference_inference` with its guide fitted to ``train``."""
    pyro.set_rng_seed(seed)
    reference = reference_inference(generator)
    reference.fit(train, epochs=epochs, batch_size=64, seed=seed, progress=False)
    return reference


@dataclass
class TrainConfig:
    story: str = "nvdm"
    data: str = SYNTHETIC
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    latent_dim: int = 50
    hidden: tuple[int, ...] = (500,)
    activation: str = "tanh"
    elbo: str = "meanfield"
    anneal: str | None = None
    free_bits: float | None = None
    clip_norm: float | None = None
    seed: int = 0
    device: str = "cpu"


def _make_inference(config: TrainConfig, story, guide) -> Amortized:
    elbo = {"meanfield": None, "trace": pyro.infer.Trace_ELBO()}[config.elbo]
    return Amortized(
        story,
        guide,
        elbo=elbo,
        optim_args={"lr": config.lr},
        clip_norm=config.clip_norm,
        annealing=parse_schedule(config.anneal) if config.anneal else None,
        free_bits=config.free_bits,
    )


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train ``config`` into run directory ``out`` (continuing it with ``resume``)."""
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    if config.story not in STORIES:
        raise ValueError(f"unknown story {config.story!r}; choose from {sorted(STORIES)}")
    if config.elbo not in ("meanfield", "trace"):
        raise ValueError(f"unknown elbo {config.elbo!r}; choose meanfield or trace")
    if config.anneal:
        parse_schedule(config.anneal)
    if ckpt_path.exists() and not resume:
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or choose another --out"
        )
    if resume and not ckpt_path.exists():
        raise FileNotFoundError(f"{ckpt_path}: nothing to resume")
    checkpoint = load_checkpoint(ckpt_path) if resume else None
    if checkpoint is not None:
        saved = TrainConfig(**checkpoint.metadata["train"])
        saved.hidden = tuple(saved.hidden)
        if {**vars(saved), "epochs": 0} != {**vars(config), "epochs": 0}:
            raise ValueError(f"{out}: --resume needs the run's own settings (only --epochs may change)")
    data_config = (
        {"name": config.data, "seed": config.seed}
        if config.data == SYNTHETIC
        else {
            "name": config.data,
            "data_dir": str(Path(config.data_dir).resolve()) if config.data_dir else None,
        }
    )
    splits, generator = load_data(data_config)
    vocab = splits["train"].vocab
    metadata = {
        "story": config.story,
        "data": data_config,
        "vocab": {"size": len(vocab), "sha256": vocab.sha256},
        "train": {**vars(config), "hidden": list(config.hidden)},
    }
    if checkpoint is not None:
        check_vocabulary(splits, checkpoint.metadata)

    torch.manual_seed(config.seed)
    story, guide = STORIES[config.story][2](config, splits["train"])
    metadata.update(story_config=story.config(), guide_config=guide.config())
    reference = None
    if generator is not None:
        if checkpoint is None:
            reference = fit_reference(generator, splits["train"], config.seed)
        else:
            reference = reference_inference(generator)
    story.to(config.device), guide.to(config.device)
    inference = _make_inference(config, story, guide)
    modules = inference.modules()
    if reference is not None:
        modules["reference_guide"] = reference.guide

    start_epoch = 0
    if checkpoint is not None:
        checkpoint.load_into(modules)
        inference.load_state_dict(checkpoint.state["inference"])
        set_rng_state(checkpoint.state["rng"])
        start_epoch = checkpoint.metadata["epoch"]
        _truncate_metrics(out / METRICS, start_epoch)
    else:
        pyro.set_rng_seed(config.seed)
        out.mkdir(parents=True, exist_ok=True)
        (out / METRICS).unlink(missing_ok=True)

    clock = [time.perf_counter()]

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        metrics["train_seconds"] = time.perf_counter() - clock[0]
        report = evaluate(inference, splits["test"], "elbo", 1).summary()
        metrics.update({f"test_{k}": v for k, v in report.items() if k not in ("estimator", "samples")})
        save_checkpoint(
            ckpt_path,
            modules,
            {"inference": inference.state_dict(), "rng": rng_state()},
            {**metadata, "epoch": epoch},
        )
        with (out / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        plot_curves(read_metrics(out / METRICS), out / CURVES)
        clock[0] = time.perf_counter()

    return inference.fit(
        splits["train"],
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        start_epoch=start_epoch,
        on_epoch_end=on_epoch_end,
        progress=progress,
    )


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_metrics(path: Path, epoch: int) -> None:
    kept = [m for m in read_metrics(path) if m["epoch"] <= epoch]
    path.write_text("".join(json.dumps(m) + "\n" for m in kept))


@dataclass
class LoadedRun:
    inference: Amortized
    splits: dict
    metadata: dict
    reference: Amortized | None


def load_run(run: str | Path, data_dir: str | Path | None = None, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained run's inference object and data from its checkpoint."""
    checkpoint = load_checkpoint(Path(run) / CHECKPOINT)
    meta = checkpoint.metadata
    splits, generator = load_data(meta["data"], data_dir)
    check_vocabulary(splits, meta)
    story, guide = build(meta["story"], meta["story_config"], meta["guide_config"])
    inference = Amortized(story, guide)
    modules = inference.modules()
    reference = None
    if generator is not None:
        reference = Amortized(
            generator,
            NormalGuide(generator.vocab_size, generator.latent_dim, hidden=[200]),
            learn_story=False,
        )
        modules["reference_guide"] = reference.guide
    checkpoint.load_into(modules)
    for module in modules.values():
        module.to(device)
    if generator is not None:
        generator.to(device)
    return LoadedRun(inference, splits, meta, reference)
