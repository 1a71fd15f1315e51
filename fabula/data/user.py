"""A researcher's own corpus: a folder of split files, or a single file, read into fabula corpora.

A folder holds a ``train`` and a ``test`` file and optionally a ``valid`` (or ``dev``) one, each
named by its split, optionally after a prefix ending in a dot (``train.txt``, ``ptb.valid.txt``,
``test.jsonl``, ``train.feat``). A single file is training data alone. A missing validation split
(and, for a single file, the test split) is a seeded share of the training lines held out. The
vocabulary comes from the training split only.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from fabula.data.bow import MAX_COUNT, BagOfWords
from fabula.data.errors import DataFormatError
from fabula.data.files import numbered_lines
from fabula.data.text import SPECIALS, UNK, TextCorpus, TextVocab, refuse_reserved
from fabula.data.vocab import Vocab
from fabula.errors import SettingsError
from fabula.settings import COUNT, Range, check_ranges, setting

#: The two kinds of data a story reads (its ``reads``): one sentence per line, or bags of words.
SENTENCES, DOCUMENTS = "sentences", "documents"
FORMATS = {SENTENCES: ("txt", "jsonl"), DOCUMENTS: ("txt", "jsonl", "feat")}
"""The file formats (name endings) each kind of corpus is read from."""
VOCAB_FILES = ("vocab.new", "vocab.txt")
"""The vocabulary of ``.feat`` files: one of these beside them, ``WORD COUNT`` per line."""
_SPLIT_FILE = re.compile(r"(?:.+\.)?(train|valid|dev|test)\.(txt|jsonl|feat)")
_HELD_OUT = ("valid", "test")  # in the order they are taken from the shuffled training lines


@dataclass(frozen=True)
class Tokenization:
    """How a user's text becomes words and a vocabulary (built from the training split only).

    Words are the whitespace-separated pieces of a line (after lower-casing, where asked):
    punctuation stays attached to its word, so text wanting finer words is tokenized beforehand.
    """

    lowercase: bool = setting(False, "lower-case the text before splitting it into words")
    vocab_size: int | None = setting(
        None,
        "keep this many of the most frequent words of the training split (sentences add <pad> <bos> "
        "<eos> <unk>; unset: every word)",
        within=COUNT,
    )
    min_count: int = setting(1, "keep the words seen at least this often in the training split", within=COUNT)
    max_length: int | None = setting(
        None,
        "sentences: leave out training sentences of more words than this (unset: keep all)",
        within=COUNT,
    )
    stop_words: str | None = setting(None, "documents: a file of words to leave out, one per line")
    held_out: float = setting(
        0.1,
        "the share of the training lines held out (seeded) as the validation split where the data has "
        "none, and as the test split of a single file",
        within=Range(above=0, below=1),
    )

    def __post_init__(self):
        check_ranges(self)


class _Line(NamedTuple):
    """A datum's words and where it was read."""

    path: Path
    number: int
    words: list[str]


def read_corpus(
    path: str | Path,
    kind: str,
    tokenization: Tokenization = Tokenization(),
    seed: int = 0,
    vocab: Vocab | None = None,
) -> tuple[dict, dict]:
    """``({split: corpus}, description)`` of a user's folder or file (see the module).

    :param kind: :data:`SENTENCES`, read into :class:`~fabula.data.text.TextCorpus` splits whose
        :class:`~fabula.data.text.TextVocab` maps the other words to ``<unk>``; or
        :data:`DOCUMENTS`, read into :class:`~fabula.data.BagOfWords` splits whose counts leave
        out the other words and the stop words (and a document left without words).
    :param path: ``.txt`` files (a datum per line), ``.jsonl`` files (a JSON object per line, the
        datum its ``text`` field) or, for documents, NVDM ``.feat`` files with ``vocab.new`` or
        ``vocab.txt`` beside them (counted already: of the tokenization only ``held_out``
        applies). Blank lines are skipped.
    :param seed: draws the training lines held out as a missing split.
    :param vocab: a run's saved vocabulary, used as is; with the same ``seed`` and tokenization
        the splits are those read before.
    :returns: the ``train``, ``valid`` and ``test`` corpora, and for a run's metadata the
        resolved ``path``, ``kind``, ``format``, each split's source file (``files``), the
        ``held_out`` splits, the ``tokenization``, the data per split (``sizes``), the size of
        the ``vocabulary`` and, where any, the data ``left_out`` per split (training sentences
        over ``max_length``, documents without a word of the vocabulary).
    :raises DataFormatError: naming the file and, where one is at fault, the line.

    Documents in a folder with a training and a test file, the validation split held out:

    >>> import tempfile
    >>> from pathlib import Path
    >>> from fabula.data import DOCUMENTS, Tokenization, read_corpus
    >>> train = ["the cat sat on the mat", "the dog sat on the log", "a cat ran to the dog", "the dog ran"] * 3
    >>> test = ["the cat sat", "a dog sang"]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for split, lines in {"train": train, "test": test}.items():
    ...         with open(Path(folder) / f"{split}.txt", "w") as file:
    ...             for line in lines:
    ...                 print(line, file=file)
    ...     corpora, description = read_corpus(folder, DOCUMENTS, Tokenization(min_count=4))
    >>> description["sizes"], description["held_out"]
    ({'train': 11, 'valid': 1, 'test': 2}, {'valid': 'share 0.1 of train, seed 0'})
    >>> corpora["test"].vocab.words  # the training words seen at least 4 times, by count
    ['the', 'dog', 'cat', 'ran', 'on', 'sat']
    >>> corpora["test"].batch([0, 1]).counts  # "a dog sang" keeps its known word
    tensor([[1., 0., 1., 0., 0., 1.],
            [0., 1., 0., 0., 0., 0.]])
    """
    if kind not in FORMATS:
        raise SettingsError(f"kind must be {SENTENCES!r} or {DOCUMENTS!r}, got {kind!r}")
    path = Path(path).resolve()
    if not path.exists():
        raise DataFormatError(path, "not found (expected a folder of split files or a file)")
    files = _split_files(path, kind) if path.is_dir() else _single_file(path, kind)
    fmt = files["train"].suffix[1:]
    _refuse_options(kind, fmt, tokenization, files["train"])
    held = [split for split in _HELD_OUT if split not in files]
    if fmt == "feat":
        if vocab is None:
            vocab = Vocab.from_nvdm_file(_vocab_file(files["train"].parent))
        corpora = {split: BagOfWords.from_nvdm_file(file, vocab) for split, file in files.items()}
        rows = _hold_out(len(corpora["train"]), held, tokenization.held_out, seed, files["train"])
        corpora |= {split: corpora["train"].subset(index) for split, index in rows.items()}
        left_out = {}
    else:
        stop = _stop_words(tokenization) if kind == DOCUMENTS else frozenset()
        data = {split: _read_lines(file, fmt, kind, tokenization, stop) for split, file in files.items()}
        rows = _hold_out(len(data["train"]), held, tokenization.held_out, seed, files["train"])
        data |= {split: [data["train"][i] for i in index] for split, index in rows.items()}
        read = _sentences if kind == SENTENCES else _documents
        corpora, left_out = read(data, tokenization, vocab)
    corpora = {split: corpora[split] for split in ("train", "valid", "test")}
    description = {
        "path": str(path),
        "kind": kind,
        "format": fmt,
        "files": {split: files.get(split, files["train"]).name for split in corpora},
        "held_out": {split: f"share {tokenization.held_out} of train, seed {seed}" for split in held},
        "tokenization": dataclasses.asdict(tokenization),
        "sizes": {split: len(corpus) for split, corpus in corpora.items()},
        "vocabulary": len(corpora["train"].vocab),
    }
    if left_out:
        description["left_out"] = left_out
    return corpora, description


def _split_files(folder: Path, kind: str) -> dict[str, Path]:
    """``{split: file}`` of the split files in ``folder`` (``dev`` named ``valid``)."""
    files: dict[str, Path] = {}
    for file in sorted(folder.iterdir()):
        match = _SPLIT_FILE.fullmatch(file.name)
        if match is None or match[2] not in FORMATS[kind] or not file.is_file():
            continue
        split = "valid" if match[1] == "dev" else match[1]
        if split in files:
            raise DataFormatError(folder, f"both {files[split].name} and {file.name} hold the {split} split")
        files[split] = file
    endings = "/".join(f".{fmt}" for fmt in FORMATS[kind][1:])
    for split in ("train", "test"):
        if split not in files:
            raise DataFormatError(
                folder, f"no {split}.txt (or {endings}, or a prefixed name such as ptb.{split}.txt) here"
            )
    if len(formats := {file.suffix for file in files.values()}) > 1:
        raise DataFormatError(folder, f"the split files mix formats ({', '.join(sorted(formats))})")
    return {split: files[split] for split in ("train", "valid", "test") if split in files}


def _single_file(file: Path, kind: str) -> dict[str, Path]:
    if file.suffix[1:] not in FORMATS[kind]:
        endings = ", ".join(f".{fmt}" for fmt in FORMATS[kind])
        raise DataFormatError(file, f"{kind} are read from {endings} files")
    return {"train": file}


_NOT_FOR = {SENTENCES: "stop_words", DOCUMENTS: "max_length"}  # the option each kind has no use for


def _refuse_options(kind: str, fmt: str, tokenization: Tokenization, file: Path) -> None:
    """Refuse the tokenization options that this kind and format of corpus would leave unused."""
    if fmt == "feat":
        why = "the words of a .feat file are counted already"
        unused = [
            f.name
            for f in dataclasses.fields(Tokenization)
            if f.name != "held_out" and getattr(tokenization, f.name) != f.default
        ]
    else:
        why = f"{kind} have no use for it"
        unused = [_NOT_FOR[kind]] if getattr(tokenization, _NOT_FOR[kind]) is not None else []
    if unused:
        raise SettingsError(f"{file.name}: tokenization {', '.join(unused)} refused ({why})")


def _vocab_file(folder: Path) -> Path:
    """The one vocabulary file of :data:`VOCAB_FILES` in ``folder``."""
    found = [folder / name for name in VOCAB_FILES if (folder / name).is_file()]
    if not found:
        raise DataFormatError(
            folder, f"no vocabulary file ({' or '.join(VOCAB_FILES)}) beside the .feat files"
        )
    if len(found) > 1:
        raise DataFormatError(folder, f"both {found[0].name} and {found[1].name} could be the vocabulary")
    return found[0]


def _hold_out(lines: int, splits: list[str], share: float, seed: int, file: Path) -> dict[str, list[int]]:
    """``{split: line positions}`` of ``train`` and of each of ``splits`` held out from its
    ``lines`` lines: a share ``share`` (at least one line) each, drawn by a ``random.Random(seed)``
    shuffle, each split in the file's order."""
    if not splits:
        return {}
    size = max(1, round(share * lines))
    if lines - size * len(splits) < 1:
        raise DataFormatError(
            file, f"{lines} training lines are too few to hold out {' and '.join(splits)} (share {share})"
        )
    order = list(range(lines))
    random.Random(seed).shuffle(order)
    parts = {split: sorted(order[k * size : (k + 1) * size]) for k, split in enumerate(splits)}
    return {"train": sorted(order[size * len(splits) :]), **parts}


def _stop_words(tokenization: Tokenization) -> frozenset[str]:
    """The words of the stop-word file (lower-cased with the text), none without one."""
    if tokenization.stop_words is None:
        return frozenset()
    lower = str.lower if tokenization.lowercase else str
    lines = numbered_lines(tokenization.stop_words, "stop-word file")
    return frozenset(word for _, line in lines for word in lower(line).split())


def _read_lines(
    file: Path, fmt: str, kind: str, tokenization: Tokenization, stop: frozenset[str]
) -> list[_Line]:
    """The words of each non-blank line of ``file`` (of its ``text`` field in ``.jsonl``), less
    the ``stop`` words; a sentence may not hold a reserved token."""
    lower = str.lower if tokenization.lowercase else str
    data, read = [], 0
    for n, line in numbered_lines(file, "file"):
        read += 1
        text = _json_text(line, file, n) if fmt == "jsonl" and line.strip() else line
        words = [word for word in lower(text).split() if word not in stop]
        if kind == SENTENCES:
            refuse_reserved(words, file, n)
        if text.strip():
            data.append(_Line(file, n, words))
    if not read:
        raise DataFormatError(file, "the file is empty")
    if not data:
        raise DataFormatError(file, f"no data: each of the {read} lines is blank")
    return data


def _json_text(line: str, file: Path, n: int) -> str:
    """The ``text`` field of JSON line ``n``."""
    try:
        record = json.loads(line.rstrip("\n"))
    except json.JSONDecodeError as e:
        raise DataFormatError(file, f"not JSON ({e.msg} at column {e.colno})", n) from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DataFormatError(file, 'expected a JSON object with a string "text" field', n)
    return record["text"]


def _sentences(data: dict[str, list[_Line]], tokenization: Tokenization, vocab: TextVocab | None):
    """``({split: TextCorpus}, {split: sentences left out})``: training sentences over
    ``max_length`` words are left out, and the vocabulary is built from the others."""
    limit = tokenization.max_length
    train = [line for line in data["train"] if limit is None or len(line.words) <= limit]
    if not train:
        raise DataFormatError(data["train"][0].path, f"no training sentence of at most {limit} words")
    left_out = {"train": len(data["train"]) - len(train)}
    data = {**data, "train": train}
    if vocab is None:
        size = tokenization.vocab_size
        vocab = TextVocab.build(
            (line.words for line in train),
            max_size=None if size is None else size + len(SPECIALS),
            min_count=tokenization.min_count,
        )
    corpora = {}
    for split, lines in data.items():
        corpora[split] = TextCorpus([vocab.encode(line.words) for line in lines], vocab, str(lines[0].path))
        if split != "train" and bool((corpora[split].ids == UNK).all()):
            _no_known_word(split, lines[0].path)
    return corpora, {split: n for split, n in left_out.items() if n}


def _documents(data: dict[str, list[_Line]], tokenization: Tokenization, vocab: Vocab | None):
    """``({split: BagOfWords}, {split: documents left out})``: the vocabulary is the training
    split's words by descending count (ties alphabetical), and a document without a word of it
    is left out."""
    if vocab is None:
        counts = Counter(word for line in data["train"] for word in line.words)
        words = sorted(
            (w for w, c in counts.items() if c >= tokenization.min_count), key=lambda w: (-counts[w], w)
        )
        vocab = Vocab(words[: tokenization.vocab_size])
    corpora, left_out = {}, {}
    for split, lines in data.items():
        corpora[split], left_out[split] = _bag(lines, vocab)
        if corpora[split] is None:
            if split == "train":
                raise DataFormatError(lines[0].path, "no training document keeps a word of the vocabulary")
            _no_known_word(split, lines[0].path)
    return corpora, {split: n for split, n in left_out.items() if n}


def _bag(lines: list[_Line], vocab: Vocab) -> tuple[BagOfWords | None, int]:
    """The documents of ``lines`` counted over ``vocab`` (``None`` if none keeps a word), and
    how many were left out without one."""
    indptr, ids, counts = [0], [], []
    for line in lines:
        bag = Counter(vocab.index[word] for word in line.words if word in vocab.index)
        if sum(bag.values()) > MAX_COUNT:
            raise DataFormatError(line.path, f"document of more than {MAX_COUNT} words", line.number)
        for i in sorted(bag):
            ids.append(i)
            counts.append(bag[i])
        if bag:
            indptr.append(len(ids))
    if len(indptr) == 1:
        return None, len(lines)
    corpus = BagOfWords(
        torch.tensor(indptr),
        torch.tensor(ids, dtype=torch.long),
        torch.tensor(counts, dtype=torch.float32),
        vocab,
        name=str(lines[0].path),
    )
    return corpus, len(lines) - len(corpus)


def _no_known_word(split: str, file: Path) -> None:
    raise DataFormatError(file, f"no word of the {split} split is in the training vocabulary")
