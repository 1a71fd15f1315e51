"""Resuming a run: the saved settings must be the run's own, and the training state (optimizers,
schedules, update policy, every data-parallel rank's random streams and own state) is restored
exactly, or refused with the file's name where it does not fit."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyro
import torch

from fabula import distributed
from fabula.checkpoint import Checkpoint, field_error, peek_metadata, set_rng_state
from fabula.errors import SettingsError
from fabula.inference.base import RankLocalState
from fabula.run.config import TrainConfig
from fabula.run.load import check_run
from fabula.rundir import RunDirectory


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


def _check_epochs(out: Path, done: int, epochs: int) -> None:
    """Refuse to resume a run that has trained ``done`` epochs up to ``epochs``, if that trains none."""
    if epochs <= done:
        raise SettingsError(
            f"the run in {out} has trained {done} epoch{'s' if done != 1 else ''}; --epochs {epochs} "
            f"would train none: ask for more than {done} to continue it"
        )


def check_epochs_left(config: TrainConfig, directory: RunDirectory) -> None:
    """Refuse, before the run directory is locked or written, to resume it up to a number of
    epochs it has already trained. Its checkpoint's header is looked at first; only where that
    says there is nothing to train is the checkpoint loaded and verified, to refuse on what it
    really holds. A directory whose last writer was killed (its lock file left behind) is left
    to :func:`check_resumed`, once the resume has put it in order (its metrics rewritten from
    the checkpoint, the lock and unfinished writes cleared)."""
    if directory.lock_path.exists():
        return
    epochs = config.run.epochs
    done = (peek_metadata(directory.checkpoint_path) or {}).get("epoch")
    if type(done) is int and epochs <= done:
        _check_epochs(directory.path, directory.load().metadata["epoch"], epochs)


def check_resumed(config: TrainConfig, checkpoint: Checkpoint, out: Path) -> None:
    """Refuse to resume ``checkpoint`` with settings other than its own (but the epochs and the
    device), or up to a number of epochs it has already trained."""
    _check_epochs(out, checkpoint.metadata["epoch"], config.run.epochs)
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
