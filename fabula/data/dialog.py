"""DailyDialog (Li et al. 2017) in the layout of Shi et al. (2020): utterances with dialogue-act
and emotion labels, for stories whose discrete latents are compared with those labels."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fabula.data.errors import DataFormatError
from fabula.data.files import abbreviate, numbered_lines, read_int
from fabula.data.text import TextCorpus, TextVocab, refuse_reserved

ACTS = ("inform", "question", "directive", "commissive")  #: the dialogue acts, label codes 1..4
#: the emotions, label codes 0..6
EMOTIONS = ("none", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
#: The marker that ends each utterance of a DailyDialog line.
END_OF_UTTERANCE = "__eou__"
VOCAB_SIZE = 10_000  #: the vocabulary size in Shi et al.'s code


class DataWarning(UserWarning):
    """Input that was read with a stated repair (e.g. a dialogue left out)."""


@dataclass
class Dialogues:
    """The utterances of a split, in order, with per-utterance labels and positions."""

    utterances: TextCorpus
    acts: torch.Tensor  # 1..4
    emotions: torch.Tensor  # 0..6
    dialogue: torch.Tensor  # index of the dialogue (line) each utterance comes from
    turn: torch.Tensor  # position of the utterance in its dialogue


def _labels(path: Path, line: str, n: int, what: str, names: tuple[str, ...], first: int) -> list[int]:
    """The labels on ``line`` (number ``n``): codes ``first, first + 1, ...`` of ``names``."""
    last = first + len(names) - 1
    note = f" ({', '.join(f'{first + k} {name}' for k, name in enumerate(names))})"
    return [
        read_int(x, first, last, path, n, what, f" in {abbreviate(line.strip())!r}", note)
        for x in line.split()
    ]


def read_dailydialog(
    folder: str | Path,
    vocab: TextVocab | None = None,
    lowercase: bool = True,
    max_vocab: int | None = VOCAB_SIZE,
):
    """Read ``folder/dialogues.txt`` with its ``dialogues_act.txt`` and ``dialogues_emotion.txt``.

    A dialogue whose utterance count differs from its label counts (train line 7,852 of the
    official release has 12 utterances and 11 labels) is left out with a :class:`DataWarning`
    naming the file and line; a split left without utterances is a :class:`DataFormatError`.
    Acts are 1..4 and emotions 0..6 (:data:`ACTS`, :data:`EMOTIONS`); no utterance may hold a
    :data:`~fabula.data.text.RESERVED` token. Unless given, the vocabulary is built from these
    utterances: the ``max_vocab`` most frequent entries, specials included (rarer words become
    ``<unk>``).

    :returns: ``(Dialogues, vocab)``.
    """
    folder = Path(folder)
    paths = [folder / name for name in ("dialogues.txt", "dialogues_act.txt", "dialogues_emotion.txt")]
    texts, acts, emotions = ([line for _, line in numbered_lines(p, "file")] for p in paths)
    for path, lines in ((paths[1], acts), (paths[2], emotions)):
        if len(lines) != len(texts):
            raise DataFormatError(path, f"{len(lines)} lines but {paths[0].name} has {len(texts)} dialogues")
    if not texts:
        raise DataFormatError(paths[0], "no dialogues (the split is empty)")
    tokens, act_labels, emotion_labels, dialogue, turn = [], [], [], [], []
    for n, (text, act_line, emotion_line) in enumerate(zip(texts, acts, emotions, strict=True), 1):
        utterances = [(u.lower() if lowercase else u).split() for u in text.split(END_OF_UTTERANCE)]
        utterances = [u for u in utterances if u]
        refuse_reserved([t for u in utterances for t in u], paths[0], n)
        a = _labels(paths[1], act_line, n, "act", ACTS, 1)
        e = _labels(paths[2], emotion_line, n, "emotion", EMOTIONS, 0)
        if not len(utterances) == len(a) == len(e):
            warnings.warn(
                f"{paths[0]}, line {n}: {len(utterances)} utterances but {len(a)} act and {len(e)} "
                "emotion labels; the dialogue is left out",
                DataWarning,
                stacklevel=2,
            )
            continue
        tokens += utterances
        act_labels += a
        emotion_labels += e
        dialogue += [n - 1] * len(utterances)
        turn += list(range(len(utterances)))
    if not tokens:
        raise DataFormatError(
            paths[0], f"no utterances: each of the {len(texts)} dialogues is empty or left out"
        )
    vocab = vocab or TextVocab.build(tokens, max_size=max_vocab)
    corpus = TextCorpus([vocab.encode(u) for u in tokens], vocab, name=str(paths[0]))
    labels = Dialogues(corpus, *(torch.tensor(x) for x in (act_labels, emotion_labels, dialogue, turn)))
    return labels, vocab


def load_dailydialog(
    data_dir: str | Path, lowercase: bool = True, max_vocab: int | None = VOCAB_SIZE
) -> dict[str, Dialogues]:
    """The train, validation and test splits under ``data_dir`` (or ``data_dir/dailydialog``),
    sharing the training split's vocabulary of ``max_vocab`` entries."""
    root = Path(data_dir)
    root = root / "dailydialog" if (root / "dailydialog").is_dir() else root
    train, vocab = read_dailydialog(root / "train", lowercase=lowercase, max_vocab=max_vocab)
    return {
        "train": train,
        "valid": read_dailydialog(root / "validation", vocab, lowercase)[0],
        "test": read_dailydialog(root / "test", vocab, lowercase)[0],
    }
