"""Loading a run back: its checkpoint's metadata checked field by field before anything is
built from it, then the inference kind that was trained rebuilt from the saved configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fabula.checkpoint import Checkpoint, check_arguments, field_error, parameters_of
from fabula.data import DOCUMENTS, SENTENCES
from fabula.data.registry import DATASETS
from fabula.errors import SettingsError
from fabula.inference import Amortized
from fabula.inference.kinds import build, parse
from fabula.run.config import SYNTHETIC, TrainConfig
from fabula.run.data import OLD_DOCUMENTS, OWN, check_vocabulary, load_data
from fabula.run.plan import inference_setup
from fabula.run.reference import reference_inference
from fabula.run.stories import recipe
from fabula.rundir import RunDirectory

#: The entries of a run checkpoint's metadata.
RUN_METADATA = ("story", "data", "vocab", "train", "story_config", "guide_config", "epoch", "history")


def _check_data_description(path: Path, data) -> None:
    """Refuse a saved data description that :func:`~fabula.run.data.data_description` does not write."""
    name = data.get("name") if isinstance(data, dict) else None
    if name == SYNTHETIC:
        expected = {"name": (str, True), "kind": (str, True), "seed": (int, True)}
    elif name == OWN:
        expected = {
            "name": (str, True),
            "path": (str, True),
            "kind": (str, True),
            "seed": (int, True),
            "held_out": (dict[str, str], True),
        }
    else:
        expected = {"name": (str, True), "data_dir": (str | None, True)}
    check_arguments(path, "metadata/data", data, expected)
    kinds = (DOCUMENTS, SENTENCES, OLD_DOCUMENTS) if name == SYNTHETIC else (DOCUMENTS, SENTENCES)
    if name in (SYNTHETIC, OWN) and data["kind"] not in kinds:
        raise field_error(path, "metadata/data/kind", f"is {data['kind']!r}, not one of {list(kinds)}")
    if name not in (SYNTHETIC, OWN) and name not in DATASETS:
        raise field_error(path, "metadata/data/name", f"is {name!r}, not a registered dataset")


def _check_vocabulary_entry(path: Path, meta: dict) -> None:
    """The vocabulary's size and checksum, and its words where the run read the user's files
    (checked against the corpus read with them by :func:`~fabula.run.data.check_vocabulary`)."""
    vocab = meta["vocab"]
    own = isinstance(meta["data"], dict) and meta["data"].get("name") == OWN
    words = vocab.get("words") if isinstance(vocab, dict) else None
    listed = {k: v for k, v in vocab.items() if k != "words"} if isinstance(vocab, dict) else vocab
    check_arguments(path, "metadata/vocab", listed, {"size": (int, True), "sha256": (str, True)})
    if own and words is None:
        raise field_error(
            path, "metadata/vocab/words", "is missing (a run on your own files keeps its words)"
        )
    if words is not None and not (
        own
        and isinstance(words, list)
        and len(words) == vocab["size"]
        and all(isinstance(w, str) for w in words)
    ):
        raise field_error(path, "metadata/vocab/words", "is not the list of the vocabulary's words")


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
    if not isinstance(story, str):
        raise field_error(path, "metadata/story", "is not a story's name")
    try:
        r = recipe(story)
    except SettingsError as e:
        raise field_error(path, "metadata/story", f"is refused: {e}") from None
    _check_data_description(path, meta["data"])
    _check_vocabulary_entry(path, meta)
    saved, parts = meta["train"], TrainConfig.parts(story)
    if not isinstance(saved, dict) or saved.get("story") != story:
        raise field_error(path, "metadata/train/story", f"does not name the run's story, {story!r}")
    for name in saved:
        if name != "story" and name not in parts:
            raise field_error(path, f"metadata/train/{name}", "is not a part of a run's configuration")
    for name, part in parts.items():
        if name in TrainConfig.OPTIONAL_PARTS and name not in saved:
            continue
        check_arguments(path, f"metadata/train/{name}", saved.get(name), parameters_of(part))
    try:
        config = TrainConfig.from_dict(saved)
    except SettingsError as e:
        raise field_error(path, "metadata/train", f"is refused: {e}") from None
    rebuilt = {}
    for name, cls in (("story", r.story), ("guide", r.guide)):
        field = f"metadata/{name}_config"
        arguments = meta[f"{name}_config"]
        check_arguments(path, field, arguments, parameters_of(cls), sizes=True)
        try:
            with torch.device("meta"):
                rebuilt[name] = cls(**arguments)
        except ValueError as e:  # the constructor's own checks (SettingsError is one)
            raise field_error(path, field, f"is refused by {cls.__name__}: {e}") from None
    if parse(config.inference.inference)[0].own_guide:  # the kind's own q: the recipe's guide is not stored
        del rebuilt["guide"]
    checkpoint.check_fits(rebuilt)
    return config


@dataclass
class LoadedRun:
    """A trained run rebuilt: its inference object (the kind that was trained), configuration,
    data splits, metadata and, for synthetic data, the generating story's fitted reference."""

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
    words = meta["vocab"].get("words")
    splits, generator = load_data(meta["data"], data_dir, config.tokenization, words)
    check_vocabulary(splits, meta)
    r = recipe(config.story)
    story, guide = r.story(**meta["story_config"]), r.guide(**meta["guide_config"])
    inference = build(config.inference.inference, inference_setup(config, story, guide, splits))
    modules = inference.modules()
    reference = None
    if generator is not None and "reference_guide" in checkpoint.weights:
        reference = reference_inference(generator, r.reads)
        modules["reference_guide"] = reference.guide
    checkpoint.load_into(modules)
    for module in modules.values():  # a loaded run is for evaluation and inference: no dropout
        module.to(device).eval()
    if generator is not None:
        generator.to(device).eval()
    return LoadedRun(inference, config, splits, meta, reference)
