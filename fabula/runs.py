"""Training runs on disk: build a story, guide and inference object from a configuration,
train with per-epoch evaluation, checkpoints and curves, and load a run back.

A run directory holds ``checkpoint.safetensors`` (see :mod:`fabula.checkpoint`),
``metrics.jsonl`` (one line per epoch) and ``curves.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

from fabula.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from fabula.data import DataFormatError, load_dataset, synthetic_nvdm_corpus
from fabula.data.registry import DATASETS
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.evaluation import evaluate
from fabula.evaluation.mixture import mixture_diagnostics
from fabula.guides import EmptyGuide, MixtureGuide, NormalGuide, SentenceGuide
from fabula.inference import Aggressive, Amortized, Dispersed, parse_schedule
from fabula.models import GMVAE, LSTMVAE, NVDM, RNNLM
from fabula.plots import plot_component_means, plot_curves

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
CURVES = "curves.png"
COMPONENTS = "components.png"
SYNTHETIC = "synthetic"


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in its checkpoint)."""

    story: str = "nvdm"
    data: str = SYNTHETIC
    data_dir: str | None = None
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    lr_decay: float = 1.0
    decay_after: int = 0
    latent_dim: int = 50
    hidden: tuple[int, ...] = (500,)
    activation: str = "tanh"
    embed_dim: int = 256
    hidden_dim: int = 256
    encoder: str = "lstm"
    z_every_step: bool = True
    tie: bool = False
    dropout: float = 0.0
    elbo: str = "meanfield"
    anneal: str | None = None
    free_bits: float | None = None
    word_dropout: float = 0.0
    aggressive: bool = False
    num_components: int = 10
    num_pairs: int = 1
    dispersion: float = 0.0
    mi_weight: float = 0.0
    clip_norm: float | None = None
    validate: bool = False
    seed: int = 0
    device: str = "cpu"


def new_nvdm(config: TrainConfig, train_corpus):
    """A fresh NVDM with the background of ``train_corpus`` and its MLP encoder guide."""
    V = len(train_corpus.vocab)
    story = NVDM(V, config.latent_dim)
    story.init_background(train_corpus)
    guide = NormalGuide(V, config.latent_dim, hidden=list(config.hidden), activation=config.activation)
    return story, guide


def new_rnnlm(config: TrainConfig, train_corpus):
    story = RNNLM(len(train_corpus.vocab), config.embed_dim, config.hidden_dim, config.tie, config.dropout)
    return story, EmptyGuide()


def new_lstm_vae(config: TrainConfig, train_corpus):
    V = len(train_corpus.vocab)
    story = LSTMVAE(
        V,
        config.latent_dim,
        config.embed_dim,
        config.hidden_dim,
        config.z_every_step,
        config.tie,
        config.dropout,
    )
    return story, SentenceGuide(V, config.latent_dim, config.embed_dim, config.hidden_dim, config.encoder)


def new_gmvae(config: TrainConfig, train_corpus):
    V, K, D, M = len(train_corpus.vocab), config.num_components, config.latent_dim, config.num_pairs
    story = GMVAE(V, K, D, M, config.embed_dim, config.hidden_dim, config.dropout)
    return story, MixtureGuide(V, K, D, M, config.embed_dim, config.hidden_dim)


@dataclass(frozen=True)
class Recipe:
    """How to build and rebuild a story with its guide, and which data it reads."""

    story: type
    guide: type
    new: Callable
    kind: str  # "bow" or "sentences"


STORIES = {
    "nvdm": Recipe(NVDM, NormalGuide, new_nvdm, "bow"),
    "rnnlm": Recipe(RNNLM, EmptyGuide, new_rnnlm, "sentences"),
    "lstm-vae": Recipe(LSTMVAE, SentenceGuide, new_lstm_vae, "sentences"),
    "gmvae": Recipe(GMVAE, MixtureGuide, new_gmvae, "sentences"),
}
KIND_OF_FORMAT = {"nvdm": "bow", "lines": "sentences", "dialogues": "sentences"}


def build(story_name: str, story_config: dict, guide_config: dict):
    """The story and guide of a saved run, from their ``config()``."""
    if story_name not in STORIES:
        raise ValueError(f"unknown story {story_name!r}; choose from {sorted(STORIES)}")
    recipe = STORIES[story_name]
    return recipe.story(**story_config), recipe.guide(**guide_config)


def load_data(data_config: dict, data_dir: str | Path | None = None):
    """``({split: corpus}, generating story or None)`` for a run's data configuration."""
    name = data_config["name"]
    if name == SYNTHETIC:
        if data_config["kind"] == "bow":
            return synthetic_nvdm_corpus(seed=data_config["seed"])
        return synthetic_sentence_corpus(seed=data_config["seed"])
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted([SYNTHETIC, *DATASETS])}")
    return load_dataset(name, data_dir or data_config.get("data_dir")), None


def check_vocabulary(splits: dict, metadata: dict) -> None:
    """Refuse data whose vocabulary differs from the one the run was trained on."""
    corpus = next(iter(splits.values()))
    vocab, want = corpus.vocab, metadata["vocab"]
    if vocab.sha256 != want["sha256"]:
        raise DataFormatError(
            corpus.name,
            f"vocabulary ({len(vocab)} words, sha256 {vocab.sha256[:12]}) differs from the "
            f"checkpoint's ({want['size']} words, sha256 {want['sha256'][:12]})",
        )


def reference_inference(generator) -> Amortized:
    """Amortized VI for the (frozen) generating story of a synthetic corpus, so that its NLL
    can be bounded with the same estimators as the trained model's."""
    if isinstance(generator, NVDM):
        guide = NormalGuide(generator.vocab_size, generator.latent_dim, hidden=[200])
    else:
        guide = SentenceGuide(generator.vocab_size, generator.latent_dim, embed_dim=100, hidden_dim=100)
    return Amortized(generator, guide, learn_story=False, optim_args={"lr": 3e-3})


def fit_reference(generator, train, seed: int) -> Amortized:
    """:func:`reference_inference` with its guide fitted to ``train`` (30 epochs of the bag of
    words, 10 of the sentences)."""
    epochs = 30 if isinstance(generator, NVDM) else 10
    pyro.set_rng_seed(seed)
    reference = reference_inference(generator)
    reference.fit(train, epochs=epochs, batch_size=64, seed=seed, progress=False)
    return reference


def training_data_config(config: TrainConfig) -> dict:
    """The data part of a run's metadata: the synthetic corpus for the story's kind and seed, or
    a registered dataset and where its local copy lies."""
    if config.data == SYNTHETIC:
        return {"name": SYNTHETIC, "kind": STORIES[config.story].kind, "seed": config.seed}
    data_dir = str(Path(config.data_dir).resolve()) if config.data_dir else None
    return {"name": config.data, "data_dir": data_dir}


def load_training_data(config: TrainConfig):
    """``({split: corpus}, generating story or None)`` for a training configuration."""
    _validate(config)
    return load_data(training_data_config(config))


def eval_split(splits: dict) -> str:
    """The split evaluated after each epoch: validation where the data has one."""
    return "valid" if "valid" in splits else "test"


def _make_inference(config: TrainConfig, story, guide, splits) -> Amortized:
    settings = dict(
        elbo={"meanfield": None, "trace": pyro.infer.Trace_ELBO()}[config.elbo],
        optimizer=OPTIMIZERS[config.optimizer],
        optim_args={"lr": epoch_lr(config, 1)},
        clip_norm=config.clip_norm,
        annealing=parse_schedule(config.anneal) if config.anneal else None,
        free_bits=config.free_bits,
        word_dropout=config.word_dropout,
    )
    if config.story == "gmvae":  # c is summed out by Dispersed's TraceEnum_ELBO
        del settings["elbo"], settings["free_bits"]
        return Dispersed(story, guide, config.dispersion, config.mi_weight, **settings)
    if config.aggressive:
        return Aggressive(
            story,
            guide,
            splits["train"],
            splits["valid"],
            batch_size=config.batch_size,
            seed=config.seed,
            **settings,
        )
    return Amortized(story, guide, **settings)


OPTIMIZERS = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """The step size of (1-based) ``epoch``: ``lr`` until epoch ``decay_after``, then multiplied
    by ``lr_decay`` each epoch (the schedule of Zaremba et al. 2014's PTB language models)."""
    return config.lr * config.lr_decay ** max(0, epoch - config.decay_after)


def _validate(config: TrainConfig) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; choose from {sorted(OPTIMIZERS)}")
    if not 0 < config.lr_decay <= 1:
        raise ValueError(f"lr_decay must lie in (0, 1], got {config.lr_decay}")
    if config.story not in STORIES:
        raise ValueError(f"unknown story {config.story!r}; choose from {sorted(STORIES)}")
    if config.elbo not in ("meanfield", "trace"):
        raise ValueError(f"unknown elbo {config.elbo!r}; choose meanfield or trace")
    if config.anneal:
        parse_schedule(config.anneal)
    kind = STORIES[config.story].kind
    if config.data != SYNTHETIC and config.data not in DATASETS:
        raise ValueError(f"unknown dataset {config.data!r}; choose from {sorted([SYNTHETIC, *DATASETS])}")
    if config.data != SYNTHETIC and KIND_OF_FORMAT[DATASETS[config.data].format] != kind:
        raise ValueError(f"the {config.story} story reads {kind} data; {config.data!r} is not such a dataset")
    if (config.aggressive or config.word_dropout) and kind != "sentences":
        raise ValueError("--aggressive and --word-dropout apply to sentence stories")
    if config.story == "gmvae":
        if config.elbo != "meanfield" or config.free_bits is not None or config.aggressive:
            raise ValueError(
                "the gmvae story trains on TraceEnum_ELBO; --elbo, --free-bits and --aggressive do not apply"
            )
    elif config.dispersion or config.mi_weight:
        raise ValueError("--dispersion and --mi-weight apply to the gmvae story")


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train ``config`` into run directory ``out`` (continuing it with ``resume``)."""
    _validate(config)
    out = Path(out)
    ckpt_path = out / CHECKPOINT
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
    data_config = training_data_config(config)
    splits, generator = load_data(data_config)
    if "train" not in splits:
        raise ValueError(f"dataset {config.data!r} has no train split (it has {sorted(splits)})")
    if config.aggressive and "valid" not in splits:
        raise ValueError(f"--aggressive needs a validation split; {config.data!r} has {sorted(splits)}")
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
    story, guide = STORIES[config.story].new(config, splits["train"])
    metadata.update(story_config=story.config(), guide_config=guide.config())
    reference = None
    if generator is not None:
        if checkpoint is None:
            reference = fit_reference(generator, splits["train"], config.seed)
        else:
            reference = reference_inference(generator)
    story.to(config.device), guide.to(config.device)
    inference = _make_inference(config, story, guide, splits)
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

    split = eval_split(splits)
    clock = [time.perf_counter()]

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        metrics["train_seconds"] = time.perf_counter() - clock[0]
        metrics["lr"] = epoch_lr(config, epoch)
        report = evaluate(inference, splits[split], "elbo", 1).summary()
        metrics["eval_split"] = split
        metrics.update({f"eval_{k}": v for k, v in report.items() if k not in ("estimator", "samples")})
        if isinstance(story, GMVAE):  # mode-collapse diagnostics and the component means
            metrics.update({f"eval_{k}": v for k, v in mixture_diagnostics(inference, splits[split]).items()})
            metrics["component_means"] = story.component_means.tolist()
        inference.set_lr(epoch_lr(config, epoch + 1))
        save_checkpoint(
            ckpt_path,
            modules,
            {"inference": inference.state_dict(), "rng": rng_state()},
            {**metadata, "epoch": epoch},
        )
        with (out / METRICS).open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        history = read_metrics(out / METRICS)
        plot_curves(history, out / CURVES)
        if isinstance(story, GMVAE):
            plot_component_means(history, out / COMPONENTS)
        clock[0] = time.perf_counter()

    # Pyro's argument and shape checks add about half to an NVDM step (benchmarks/overhead.py);
    # the built-in stories are checked with them on in the test suite
    with pyro.validation_enabled(config.validate):
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
        reference = reference_inference(generator)
        modules["reference_guide"] = reference.guide
    checkpoint.load_into(modules)
    for module in modules.values():  # a loaded run is for evaluation and inference: no dropout
        module.to(device).eval()
    if generator is not None:
        generator.to(device).eval()
    return LoadedRun(inference, splits, meta, reference)
