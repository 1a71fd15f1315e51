"""Training a run, written out as one loop: resolve the plan (data, story, guide, inference
kind), restore a checkpoint where the run resumes, then per epoch train, evaluate, measure the
story's callbacks and commit weights, state and metrics together."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path

import pyro
import torch

from fabula import distributed
from fabula.checkpoint import Checkpoint, rng_state
from fabula.devices import resolve, set_precision
from fabula.errors import DivergenceError, SettingsError
from fabula.evaluation import evaluate
from fabula.evaluation.report import Evaluation
from fabula.inference import VariationalInference
from fabula.inference.annealing import unfinished_warmup
from fabula.inference.base import RankLocalState
from fabula.inference.kinds import build
from fabula.inference.sources import Tabulated
from fabula.inference.trainer import train_epoch
from fabula.run.callbacks import Epoch
from fabula.run.config import TrainConfig
from fabula.run.data import check_vocabulary, data_description, eval_split, load_data, read_own
from fabula.run.plan import build_story, inference_setup
from fabula.run.reference import fit_reference, reference_inference
from fabula.run.resume import check_epochs_left, check_resumed, rank_seed, restore_training_state
from fabula.run.stories import recipe
from fabula.rundir import RunDirectory


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
    (:mod:`fabula.distributed`).

    A small NVDM trained for one epoch on the embedded synthetic corpus:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from fabula.run import TrainConfig, train
    >>> config = TrainConfig.create("nvdm", epochs=1, latent_dim=2, hidden=(8,), reference=False)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     history = train(config, Path(folder) / "run", progress=False)
    ...     written = sorted(path.name for path in (Path(folder) / "run").iterdir())
    >>> written
    ['checkpoint.safetensors', 'curves.png', 'metrics.jsonl', 'topics.txt']
    >>> len(history), history[0]["epoch"], history[0]["eval_split"], history[0]["eval_num_data"]
    (1, 1, 'test', 500)
    """
    device = resolve(config.run.device)
    set_precision(device, config.run.precision)
    directory = RunDirectory(out)
    if resume:
        check_epochs_left(config, directory)
    with distributed.process_group(device) as here, contextlib.ExitStack() as held:
        checkpoint = distributed.on_main(lambda: held.enter_context(directory.training(resume)))
        try:
            return _train(config, directory, checkpoint, device, progress and here.main)
        except DivergenceError as e:
            raise DivergenceError(f"{e}; {directory.last_checkpoint()}") from None


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
        check_resumed(config, checkpoint, out)
    description = data_description(config)
    words = checkpoint.metadata["vocab"].get("words") if checkpoint is not None else None
    if config.data.own:
        splits, read = read_own(description, None, config.tokenization, words)
        generator, description["held_out"] = None, read["held_out"]
        if here.main and checkpoint is None:
            for split, how in read["held_out"].items():
                print(f"{config.data.data}: the {split} split is held out of the training lines ({how})")
    else:
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
    story, guide = build_story(config, splits["train"])
    metadata = {
        "story": config.story,
        "data": description,
        "vocab": {"size": len(vocab), "sha256": vocab.sha256},
        "train": config.to_dict(),
        "story_config": story.config(),
        "guide_config": guide.config(),
    }
    if config.data.own:  # the words that read new text the way the run read its training split
        metadata["vocab"]["words"] = list(vocab.words)
    story.to(device), guide.to(device)
    # built before the reference guide is fitted, so that a setting the data cannot serve is
    # refused at once (building draws no random numbers)
    inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
    reference = None
    if generator is not None and run.reference:
        generator.to(device)
        if checkpoint is None:
            reference = fit_reference(generator, r.reads, splits["train"], run.seed, progress)
        else:
            reference = reference_inference(generator, r.reads)
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
    steps = run.epochs * data.num_batches(run.batch_size)
    beta = (
        unfinished_warmup(inference.annealing, steps) if isinstance(inference, VariationalInference) else None
    )
    if beta is not None and here.main and checkpoint is None:
        print(
            f"note: --anneal {config.inference.anneal} outlasts the training's {steps} steps (β = {beta:.2f} "
            f"at the last): the model never fits the ELBO it is evaluated on; anneal over fewer steps"
        )
    split = (
        "train" if isinstance(inference.source, Tabulated) else eval_split(splits)
    )  # a table scores its own data only

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

    history = []
    # Pyro's argument and shape checks add about half to an NVDM step (benchmarks/overhead.py);
    # the built-in stories are checked with them on in the test suite
    with pyro.validation_enabled(run.validate):
        inference.begin(data)
        for epoch in range(start_epoch, run.epochs):
            start = time.perf_counter()
            metrics = train_epoch(inference, data, run.batch_size, run.seed, epoch, run.epochs, progress)
            metrics["train_seconds"] = time.perf_counter() - start
            report = (
                evaluate_parallel(inference, splits[split], r.evaluation).summary() if r.evaluation else {}
            )
            metrics["eval_split"] = split
            metrics.update({f"eval_{k}": v for k, v in report.items() if k not in ("estimator", "samples")})
            context = Epoch(inference, splits[split], vocab.words, directory.path, [])
            metrics.update(distributed.on_main(functools.partial(measure, context)))
            check_finite(metrics, epoch + 1)
            rngs = distributed.gather(rng_state(device))
            local = distributed.gather(
                inference.local_state() if isinstance(inference, RankLocalState) else None
            )
            distributed.on_main(functools.partial(commit, context, epoch + 1, metrics, rngs, local))
            history.append(metrics)
    return history
