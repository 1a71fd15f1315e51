"""Training runs: a configuration defined once (nested by the part it configures), the
inference object it builds, training into a run directory with per-epoch evaluation and the
story's callbacks, and loading a run back as the inference kind that was trained."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from fabula import distributed
from fabula.checkpoint import (
    Checkpoint,
    check_arguments,
    field_error,
    parameters_of,
    rng_state,
    set_rng_state,
)
from fabula.data import DataFormatError, load_dataset, synthetic_nvdm_corpus
from fabula.data.registry import DATASETS
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.devices import PRECISIONS, DeviceSettings, resolve, set_precision
from fabula.errors import DivergenceError, SettingsError
from fabula.evaluation import evaluate
from fabula.evaluation.report import Evaluation
from fabula.guides import NormalGuide, SentenceGuide
from fabula.inference import Amortized
from fabula.inference.base import RankLocalState
from fabula.inference.registry import InferenceSettings, Setup, build, trainable
from fabula.inference.trainer import OptimizerSettings
from fabula.recipes import BOW, SENTENCES, STORIES, Epoch, recipe
from fabula.rundir import RunDirectory
from fabula.settings import COUNT, SEED, check_ranges, from_dict, setting, to_dict

SYNTHETIC = "synthetic"
KIND_OF_FORMAT = {"nvdm": BOW, "lines": SENTENCES, "dialogues": SENTENCES}


@dataclass
class DataSettings:
    """Data: the corpus and where its local copy lies"""

    data: str = setting(
        SYNTHETIC,
        "'synthetic' (no download: sampled from a fixed random NVDM for bag-of-words stories, from the "
        "SA-VAE LSTM oracle for sentence stories) or a registered dataset: " + ", ".join(sorted(DATASETS)),
    )
    data_dir: str | None = setting(
        None, "folder with local copies of the dataset (else it is downloaded and cached)"
    )

    def __post_init__(self):
        if self.data != SYNTHETIC and self.data not in DATASETS:
            raise SettingsError(
                f"unknown dataset {self.data!r}; choose from {sorted([SYNTHETIC, *DATASETS])}"
            )


@dataclass
class RunSettings(DeviceSettings):
    """Run: length, batch size, seed, device and precision"""

    epochs: int = setting(30, "total epochs", within=COUNT)
    batch_size: int = setting(64, "data per step (per process under torchrun)", within=COUNT)
    seed: int = setting(0, "random seed", within=SEED)
    precision: str = setting(
        "fp32",
        "training steps in float32, TF32 tensor-core matmuls (CUDA) or bfloat16 autocast; evaluation "
        "stays in float32",
        choices=list(PRECISIONS),
    )
    validate: bool = setting(False, "keep Pyro's argument and shape checks on while training (slower)")
    reference: bool = setting(
        True,
        "synthetic data: fit a guide for the generating story, to bound its NLL beside the trained model's",
    )

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self)


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved in its checkpoint): the story and one
    settings object per part it configures (``model`` holds the story's own settings)."""

    story: str
    data: DataSettings
    model: object
    inference: InferenceSettings
    optimizer: OptimizerSettings
    run: RunSettings

    def __post_init__(self):
        kind = recipe(self.story).kind
        if self.data.data != SYNTHETIC and KIND_OF_FORMAT[DATASETS[self.data.data].format] != kind:
            raise SettingsError(
                f"the {self.story} story reads {kind} data; {self.data.data!r} is not such a dataset"
            )
        if self.inference.word_dropout and kind != SENTENCES:
            raise SettingsError("--word-dropout applies to sentence stories")
        trainable(self.inference.inference)
        objective = recipe(self.story).objective(self.model, self.inference)
        if self.run.precision == "bf16" and isinstance(objective, TraceEnum_ELBO):
            raise SettingsError(
                f"the {self.story} story's bound sums its discrete latents out (TraceEnum_ELBO), whose "
                "contractions take one dtype, not autocast's mixed bfloat16 and float32; train it in fp32 or tf32"
            )

    @staticmethod
    def parts(story: str) -> dict[str, type]:
        """The settings class of each part of a ``story`` run, in the saved order."""
        return {
            "data": DataSettings,
            "model": recipe(story).settings,
            "inference": InferenceSettings,
            "optimizer": OptimizerSettings,
            "run": RunSettings,
        }

    @classmethod
    def create(cls, story: str, **settings) -> TrainConfig:
        """The configuration of ``story`` at its recipe's defaults, with ``settings`` given by
        field name (each name belongs to one part: ``epochs``, ``latent_dim``, ``lr``, ...)."""
        parts = cls.parts(story)
        values = {name: dict(recipe(story).defaults.get(name, {})) for name in parts}
        owner = {f.name: name for name, part in parts.items() for f in fields(part)}
        for key, value in settings.items():
            if key not in owner:
                raise SettingsError(f"unknown setting {key!r} for the {story} story")
            values[owner[key]][key] = value
        return cls(story, **{name: from_dict(part, values[name]) for name, part in parts.items()})

    def to_dict(self) -> dict:
        return {
            "story": self.story,
            **{name: to_dict(getattr(self, name)) for name in self.parts(self.story)},
        }

    @classmethod
    def from_dict(cls, saved: dict) -> TrainConfig:
        parts = cls.parts(saved["story"])
        missing = sorted(set(parts) - set(saved))
        if missing:
            raise SettingsError(f"the saved configuration lacks {missing} (written by an older fabula?)")
        return cls(saved["story"], **{name: from_dict(part, saved[name]) for name, part in parts.items()})


def load_data(data_config: dict, data_dir: str | Path | None = None):
    """``({split: corpus}, generating story or None)`` for a run's data description."""
    name = data_config["name"]
    if name == SYNTHETIC:
        if data_config["kind"] == BOW:
            return synthetic_nvdm_corpus(seed=data_config["seed"])
        return synthetic_sentence_corpus(seed=data_config["seed"])
    if name not in DATASETS:
        raise SettingsError(f"unknown dataset {name!r}; choose from {sorted([SYNTHETIC, *DATASETS])}")
    return load_dataset(name, data_dir or data_config.get("data_dir")), None


def data_description(config: TrainConfig) -> dict:
    """The data part of a run's metadata: the synthetic corpus for the story's kind and seed, or
    a registered dataset and where its local copy lies."""
    if config.data.data == SYNTHETIC:
        return {"name": SYNTHETIC, "kind": recipe(config.story).kind, "seed": config.run.seed}
    data_dir = str(Path(config.data.data_dir).resolve()) if config.data.data_dir else None
    return {"name": config.data.data, "data_dir": data_dir}


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


def eval_split(splits: dict) -> str:
    """The split evaluated after each epoch: validation where the data has one."""
    return "valid" if "valid" in splits else "test"


REFERENCE_EPOCHS = {BOW: 30, SENTENCES: 10}


def reference_inference(generator, kind: str) -> Amortized:
    """Amortized VI for the (frozen) generating story of a synthetic corpus, so that its NLL is
    bounded by the same estimators as the trained model's."""
    if kind == BOW:
        guide = NormalGuide(generator.vocab_size, generator.latent_dim, hidden=[200])
    else:
        guide = SentenceGuide(generator.vocab_size, generator.latent_dim, embed_dim=100, hidden_dim=100)
    return Amortized(generator, guide, learn_story=False, optim_args={"lr": 3e-3})


def fit_reference(generator, kind: str, train, seed: int, progress: bool = True) -> Amortized:
    """:func:`reference_inference` with its guide fitted to ``train``, with its own progress bars."""
    epochs = REFERENCE_EPOCHS[kind]
    pyro.set_rng_seed(seed)
    reference = reference_inference(generator, kind)
    if progress:
        print(f"fitting a guide for the corpus's generating story ({epochs} epochs; --no-reference skips it)")
    reference.fit(train, epochs=epochs, batch_size=64, seed=seed, progress=progress)
    return reference


def inference_setup(config: TrainConfig, story, guide, splits) -> Setup:
    """What the configuration's inference kind (or another registered kind) is built from."""
    return Setup(
        story,
        guide,
        objective=recipe(config.story).objective(config.model, config.inference),
        training={**config.inference.training(), **config.optimizer.training()},
        refinement={"lr": config.inference.refinement_lr},
        data=splits,
        batch_size=config.run.batch_size,
        seed=config.run.seed,
    )


RUN_METADATA = ("story", "data", "vocab", "train", "story_config", "guide_config", "epoch", "history")


def _check_data_description(path: Path, data) -> None:
    """Refuse a saved data description that :func:`data_description` does not write."""
    synthetic = isinstance(data, dict) and data.get("name") == SYNTHETIC
    if synthetic:
        expected = {"name": (str, True), "kind": (str, True), "seed": (int, True)}
    else:
        expected = {"name": (str, True), "data_dir": (str | None, True)}
    check_arguments(path, "metadata/data", data, expected)
    if synthetic and data["kind"] not in (BOW, SENTENCES):
        raise field_error(path, "metadata/data/kind", f"is {data['kind']!r}, not {BOW!r} or {SENTENCES!r}")
    if not synthetic and data["name"] not in DATASETS:
        raise field_error(path, "metadata/data/name", f"is {data['name']!r}, not a registered dataset")


def check_run(checkpoint: Checkpoint) -> TrainConfig:
    """The configuration a run's checkpoint was trained with, its metadata checked before
    anything is built from it: the keys :func:`train` writes and their types, the saved settings
    against the settings classes, the story's and guide's arguments against their constructors
    (sizes bounded), and the stored weights against a story and guide rebuilt from those
    arguments on the meta device (which allocates nothing, whatever the sizes say). A refusal
    names the file and the field."""
    path, meta = checkpoint.path, checkpoint.metadata
    wrong = sorted(set(RUN_METADATA) ^ set(meta))
    if wrong:
        problem = "is missing" if wrong[0] not in meta else "is not a run's metadata"
        raise field_error(path, f"metadata/{wrong[0]}", problem)
    story = meta["story"]
    if story not in STORIES:
        raise field_error(path, "metadata/story", f"is {story!r}, not one of {sorted(STORIES)}")
    _check_data_description(path, meta["data"])
    check_arguments(path, "metadata/vocab", meta["vocab"], {"size": (int, True), "sha256": (str, True)})
    saved, parts = meta["train"], TrainConfig.parts(story)
    if not isinstance(saved, dict) or saved.get("story") != story:
        raise field_error(path, "metadata/train/story", f"does not name the run's story, {story!r}")
    for name in saved:
        if name != "story" and name not in parts:
            raise field_error(path, f"metadata/train/{name}", "is not a part of a run's configuration")
    for name, part in parts.items():
        check_arguments(path, f"metadata/train/{name}", saved.get(name), parameters_of(part))
    try:
        config = TrainConfig.from_dict(saved)
    except SettingsError as e:
        raise field_error(path, "metadata/train", f"is refused: {e}") from None
    r, rebuilt = recipe(story), {}
    for name, cls in (("story", r.story), ("guide", r.guide)):
        field = f"metadata/{name}_config"
        arguments = meta[f"{name}_config"]
        check_arguments(path, field, arguments, parameters_of(cls), sizes=True)
        try:
            with torch.device("meta"):
                rebuilt[name] = cls(**arguments)
        except ValueError as e:  # the constructor's own checks (SettingsError is one)
            raise field_error(path, field, f"is refused by {cls.__name__}: {e}") from None
    checkpoint.check_fits(rebuilt)
    return config


class WorldSizeChanged(UserWarning):
    """A run resumed with another number of data-parallel ranks than it was written by: its
    weights, optimizer state and schedules continue, its random streams and batches do not
    replay those of an uninterrupted run."""


def rank_seed(seed: int, rank: int) -> int:
    """The seed of data-parallel rank ``rank``'s random streams: ``seed`` itself on rank 0 (so
    that a world of one seeds as a single process does), distinct on every other rank."""
    return (seed + 1_000_003 * rank) % 2**32


def _restore_local_state(inference, path: Path, local: list, here: distributed.World) -> None:
    """Check every rank's saved :class:`~fabula.inference.base.RankLocalState` entry and give this
    rank its own; a rank the file has no entry for (more ranks than wrote it) starts its state
    afresh (persistent CD: new chains from its next batch)."""
    for r, entry in enumerate(local):
        if not isinstance(inference, RankLocalState):
            if entry is not None:
                raise field_error(
                    path,
                    f"state/local/{r}",
                    f"holds a state and the {inference.spec} kind keeps none per rank",
                )
            continue
        try:
            inference.load_local_state(entry)
        except (TypeError, ValueError) as e:
            raise field_error(
                path, f"state/local/{r}", f"does not fit the {inference.spec} setup ({e})"
            ) from None
    if isinstance(inference, RankLocalState):
        inference.load_local_state(local[here.rank] if here.rank < len(local) else None)


def restore_training_state(inference, checkpoint: Checkpoint, device: torch.device | None = None) -> None:
    """Load the checkpoint's training state (optimizers, schedules, update policy) into
    ``inference`` and this rank's RNG state into torch, refusing, with the file's name, a state
    that does not fit this setup. The state holds one RNG state per data-parallel rank that
    wrote it, and the state each rank keeps of its own (:class:`~fabula.inference.base.RankLocalState`:
    persistent CD's chains; files without it keep the inference state's). Resumed with another
    number of ranks, each rank's streams are seeded afresh from the run's seed, its epoch and the
    rank, with a :class:`WorldSizeChanged` warning; rank ``r`` takes the saved rank ``r``'s own
    state where the file has one, and starts it afresh otherwise."""
    path, state = checkpoint.path, checkpoint.state
    if not isinstance(state, dict) or set(state) - {"local"} != {"inference", "rng"}:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise field_error(path, "state", f"holds {found}, not inference, rng and local")
    ranks = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
    want = torch.get_rng_state()
    for r, rng in enumerate(ranks):
        cpu = rng.get("cpu") if isinstance(rng, dict) else None
        if not (isinstance(cpu, torch.Tensor) and cpu.dtype == want.dtype and cpu.shape == want.shape):
            raise field_error(path, f"state/rng/{r}/cpu", "is not a state of torch's CPU generator")
    local = state.get("local")  # absent from files written before the ranks' own states were kept
    if local is not None and not (isinstance(local, list) and len(local) == len(ranks)):
        raise field_error(path, "state/local", f"is not a list of one entry per rank ({len(ranks)})")
    try:
        inference.load_state_dict(state["inference"])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        problem = f"does not fit the {inference.spec} setup ({type(e).__name__}: {e})"
        raise field_error(path, "state/inference", problem) from None
    here = distributed.world()
    if local is not None:
        _restore_local_state(inference, path, local, here)
    if len(ranks) == here.size:
        set_rng_state(ranks[here.rank], device)
        return
    if here.main:
        warnings.warn(
            f"{path} was written by {len(ranks)} data-parallel process(es) and is resumed by {here.size}: "
            "weights, optimizer state and schedules continue; the random streams are seeded afresh and "
            "the batches are cut for the new number of processes, so the run does not replay an "
            "uninterrupted one",
            WorldSizeChanged,
            stacklevel=2,
        )
    config = checkpoint.metadata["train"]["run"]
    pyro.set_rng_seed(rank_seed(config["seed"] + checkpoint.metadata["epoch"], here.rank))


def _finite(value) -> bool:
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def check_finite(metrics: dict, epoch: int) -> None:
    """Refuse to record an epoch with a non-finite metric: a diverged fit or bound."""
    for name, value in metrics.items():
        if not _finite(value):
            shown = value if isinstance(value, float) else "not finite"
            raise DivergenceError(f"{name} is {shown} after epoch {epoch}, so the epoch is not recorded")


def train(config: TrainConfig, out: str | Path, resume: bool = False, progress: bool = True) -> list[dict]:
    """Train ``config`` into run directory ``out`` (continuing it with ``resume``), holding the
    directory's lock throughout (:class:`~fabula.rundir.RunDirectory`). A divergence is reported
    with where the run stands: its last checkpoint, verified, or that there is none yet.

    Started by ``torchrun``, every process trains its part of each batch through
    ``DistributedDataParallel`` and rank 0 alone holds the lock and writes
    (:mod:`fabula.distributed`)."""
    device = resolve(config.run.device)
    set_precision(device, config.run.precision)
    directory = RunDirectory(out)
    with distributed.process_group(device) as here, contextlib.ExitStack() as held:
        checkpoint = distributed.on_main(lambda: held.enter_context(directory.training(resume)))
        try:
            return _train(config, directory, checkpoint, device, progress and here.main)
        except DivergenceError as e:
            raise DivergenceError(f"{e}; {directory.last_checkpoint()}") from None


def _check_resumed(config: TrainConfig, checkpoint: Checkpoint, out: Path) -> None:
    """Refuse to resume ``checkpoint`` with settings other than its own (but the epochs and the device)."""
    saved = check_run(checkpoint)
    saved.run.epochs, saved.run.device = config.run.epochs, config.run.device
    if saved.story != config.story:
        raise SettingsError(f"{out} holds a run of the {saved.story} story, not of {config.story}")
    if saved != config:
        was, now = saved.to_dict(), config.to_dict()
        changed = [
            f"{part} {name}"
            for part in now
            if part != "story"
            for name in now[part]
            if was[part][name] != now[part][name]
        ]
        raise SettingsError(
            f"{out}: --resume needs the run's own settings (only --epochs and --device may change); "
            f"changed: {', '.join(changed)}"
        )


def evaluate_parallel(inference, data, estimator) -> Evaluation:
    """:func:`~fabula.evaluation.evaluate` of ``data``, each data-parallel rank scoring its shard
    (:meth:`~fabula.data.corpus.Corpus.shard`) and the per-datum results gathered on every rank
    (so that the figures are those of all of ``data``)."""
    here = distributed.world()
    if here.size == 1:
        return evaluate(inference, data, estimator)
    part = evaluate(inference, data.shard(here.rank, here.size), estimator)
    parts = distributed.gather(part)

    def joined(name):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    mi = None
    if part.mutual_information is not None:
        mi = sum(p.mutual_information * p.nll.numel() for p in parts) / sum(p.nll.numel() for p in parts)
    return Evaluation(
        estimator=part.estimator,
        samples=part.samples,
        nll=joined("nll"),
        kl=joined("kl"),
        tokens=joined("tokens"),
        posterior_means=joined("posterior_means"),
        mutual_information=mi,
        diagnostics={k: torch.cat([p.diagnostics[k] for p in parts]) for k in part.diagnostics},
    )


def _train(
    config: TrainConfig, directory: RunDirectory, checkpoint: Checkpoint | None, device, progress: bool
) -> list[dict]:
    out, here = directory.path, distributed.world()
    if checkpoint is not None:
        _check_resumed(config, checkpoint, out)
    description = data_description(config)
    splits, generator = load_data(description)
    if "train" not in splits:
        raise SettingsError(f"dataset {config.data.data!r} has no train split (it has {sorted(splits)})")
    if here.size > len(splits["train"]):
        raise SettingsError(f"{here.size} processes cannot share {len(splits['train'])} training data")
    vocab = splits["train"].vocab
    if checkpoint is not None:
        check_vocabulary(splits, checkpoint.metadata)
    r, run = recipe(config.story), config.run
    torch.manual_seed(run.seed)
    story, guide = r.build(config.model, splits["train"])
    metadata = {
        "story": config.story,
        "data": description,
        "vocab": {"size": len(vocab), "sha256": vocab.sha256},
        "train": config.to_dict(),
        "story_config": story.config(),
        "guide_config": guide.config(),
    }
    story.to(device), guide.to(device)
    # built before the reference guide is fitted, so that a setting the data cannot serve is
    # refused at once (building draws no random numbers)
    inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
    reference = None
    if generator is not None and run.reference:
        generator.to(device)
        if checkpoint is None:
            reference = fit_reference(generator, r.kind, splits["train"], run.seed, progress)
        else:
            reference = reference_inference(generator, r.kind)
    modules = inference.modules()
    if reference is not None:
        modules["reference_guide"] = reference.guide
    start_epoch = 0
    if checkpoint is not None:
        checkpoint.load_into(modules)
        restore_training_state(inference, checkpoint, device)
        start_epoch = checkpoint.metadata["epoch"]
    else:
        pyro.set_rng_seed(rank_seed(run.seed, here.rank))
    parallel = distributed.active()
    inference.trainer.configure(device, run.precision, inference.modules() if parallel else None)
    data = splits["train"].data_parallel(here.rank, here.size) if parallel else splits["train"]
    split = eval_split(splits)
    clock = [time.perf_counter()]

    def measure(context: Epoch) -> dict:
        figures = {}
        for callback in r.callbacks:
            figures.update(callback.measure(context))
        return figures

    def commit(context: Epoch, epoch: int, metrics: dict, rngs: list, local: list) -> list[dict]:
        state = {"inference": inference.state_dict(), "rng": rngs, "local": local}
        context.history = directory.commit(modules, state, {**metadata, "epoch": epoch}, metrics)
        with directory.writing("the story's per-epoch drawings", directory.path):
            for callback in r.callbacks:
                callback.draw(context)
        return context.history

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        metrics["train_seconds"] = time.perf_counter() - clock[0]
        report = evaluate_parallel(inference, splits[split], r.evaluation).summary() if r.evaluation else {}
        metrics["eval_split"] = split
        metrics.update({f"eval_{k}": v for k, v in report.items() if k not in ("estimator", "samples")})
        context = Epoch(inference, splits[split], vocab.words, directory.path, [])
        metrics.update(distributed.on_main(lambda: measure(context)))
        check_finite(metrics, epoch)
        rngs = distributed.gather(rng_state(device))
        local = distributed.gather(inference.local_state() if isinstance(inference, RankLocalState) else None)
        context.history = distributed.on_main(lambda: commit(context, epoch, metrics, rngs, local))
        clock[0] = time.perf_counter()

    # Pyro's argument and shape checks add about half to an NVDM step (benchmarks/overhead.py);
    # the built-in stories are checked with them on in the test suite
    with pyro.validation_enabled(run.validate):
        return inference.fit(
            data,
            epochs=run.epochs,
            batch_size=run.batch_size,
            seed=run.seed,
            start_epoch=start_epoch,
            on_epoch_end=on_epoch_end,
            progress=progress,
        )


@dataclass
class LoadedRun:
    inference: object
    config: TrainConfig
    splits: dict
    metadata: dict
    reference: Amortized | None


def load_run(run: str | Path, data_dir: str | Path | None = None, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained run's inference object -- the kind that was trained, from its saved
    configuration -- and its data, from its checkpoint."""
    checkpoint = RunDirectory(run).load()
    config = check_run(checkpoint)
    meta = checkpoint.metadata
    splits, generator = load_data(meta["data"], data_dir)
    check_vocabulary(splits, meta)
    r = recipe(config.story)
    story, guide = r.story(**meta["story_config"]), r.guide(**meta["guide_config"])
    inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
    modules = inference.modules()
    reference = None
    if generator is not None and "reference_guide" in checkpoint.weights:
        reference = reference_inference(generator, r.kind)
        modules["reference_guide"] = reference.guide
    checkpoint.load_into(modules)
    for module in modules.values():  # a loaded run is for evaluation and inference: no dropout
        module.to(device).eval()
    if generator is not None:
        generator.to(device).eval()
    return LoadedRun(inference, config, splits, meta, reference)
