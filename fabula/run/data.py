"""A run's data: the synthetic corpus of its story's kind, a registered dataset, or the user's own
files, described in the run's metadata so that ``evaluate``, ``sample`` and the rest read the
same splits with the vocabulary the run was trained with."""

from __future__ import annotations

from pathlib import Path

from fabula.data import (
    DOCUMENTS,
    SENTENCES,
    DataFormatError,
    Tokenization,
    load_dataset,
    read_corpus,
    synthetic_nvdm_corpus,
)
from fabula.data.registry import DATASETS
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.data.text import TextVocab
from fabula.data.vocab import Vocab
from fabula.errors import SettingsError
from fabula.run.config import SYNTHETIC, TrainConfig
from fabula.run.stories import recipe

OWN = "files"
"""The ``name`` of a data description of the user's own files."""
OLD_DOCUMENTS = "bow"
"""How runs written before the user's own corpora named the synthetic documents' kind."""


def data_description(config: TrainConfig) -> dict:
    """The data part of a run's metadata: the synthetic corpus for the story's kind and seed, a
    registered dataset and where its local copy lies, or the user's files with the tokenization
    and the seed of its held-out splits."""
    reads = recipe(config.story).reads
    if config.data.data == SYNTHETIC:
        return {"name": SYNTHETIC, "kind": reads, "seed": config.run.seed}
    if config.data.own:  # its held-out splits are added once the files are read
        return {
            "name": OWN,
            "path": str(Path(config.data.data).resolve()),
            "kind": reads,
            "seed": config.run.seed,
        }
    data_dir = str(Path(config.data.data_dir).resolve()) if config.data.data_dir else None
    return {"name": config.data.data, "data_dir": data_dir}


def saved_vocabulary(kind: str, words: list[str]) -> Vocab:
    """The vocabulary a run saved (its words in order) as the corpus reader's kind of vocabulary."""
    return TextVocab(words) if kind == SENTENCES else Vocab(words)


def read_own(
    description: dict, data_dir: str | Path | None, tokenization: Tokenization, words: list[str] | None
) -> tuple[dict, dict]:
    """``({split: corpus}, what the reader did)`` of the user's files
    (:func:`~fabula.data.read_corpus`), with the run's saved vocabulary ``words`` where given and
    from ``data_dir`` where the files moved."""
    kind = description["kind"]
    vocab = saved_vocabulary(kind, words) if words is not None else None
    return read_corpus(data_dir or description["path"], kind, tokenization, description["seed"], vocab)


def load_data(
    description: dict,
    data_dir: str | Path | None = None,
    tokenization: Tokenization | None = None,
    words: list[str] | None = None,
):
    """``({split: corpus}, generating story or None)`` for a run's data description; the user's
    files are read with ``tokenization`` and, where given, the run's saved vocabulary ``words``
    (``data_dir`` then names where the files lie now, if they moved)."""
    name = description["name"]
    if name == SYNTHETIC:
        if description["kind"] in (DOCUMENTS, OLD_DOCUMENTS):
            return synthetic_nvdm_corpus(seed=description["seed"])
        return synthetic_sentence_corpus(seed=description["seed"])
    if name == OWN:
        return read_own(description, data_dir, tokenization or Tokenization(), words)[0], None
    if name not in DATASETS:
        raise SettingsError(f"unknown dataset {name!r}; choose from {sorted([SYNTHETIC, *DATASETS])}")
    return load_dataset(name, data_dir or description.get("data_dir")), None


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
