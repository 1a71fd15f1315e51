"""Mutated corpus files for fuzzing fabula's readers, shared by ``tests/test_reader_fuzz.py`` and
``benchmarks/reader_fuzz.py``.

Each :class:`Reader` draws a small valid input (the files of one call of a public reader) from a
seeded ``random.Random``; :func:`draw_case` changes one of its files with one to three of
:data:`LINE_MUTATIONS` and :data:`BYTE_MUTATIONS` (random bytes, invalid UTF-8, huge, negative and
non-ASCII numbers, truncated lines and files, empty and missing files, wrong field counts, ...),
drawn from a second ``random.Random`` (under hypothesis, one that it drives and shrinks); and
:func:`judge` reads the files and classifies what came of it:

- ``"accepted"``: the corpus agrees with an independent reading of the same text (shapes and
  lengths agree, counts are the exact integers of the file, finite and positive, ids lie inside
  the vocabulary, labels inside their documented codes, ...);
- ``"error"``: a :class:`~fabula.data.DataFormatError` whose path is one of the files and whose
  line, where one is at fault, is set, inside the file, and one that a mutation changed;
- ``"crash"`` (any other exception while reading) or ``"inconsistent"`` (a check above failed).
"""

from __future__ import annotations

import io
import random
import re
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fabula.data import BagOfWords, DataFormatError, Vocab
from fabula.data.bow import MAX_COUNT
from fabula.data.dialog import END_OF_UTTERANCE, DataWarning, read_dailydialog
from fabula.data.registry import DATASETS
from fabula.data.text import RESERVED, SPECIALS, UNK, TextCorpus, TextVocab

Files = dict[str, bytes | None]  # file name -> content; None: the file is missing

# --- what the mutations put in -------------------------------------------------------------------

NUMBERS = (
    "0", "-0", "00", "-1", "-3", "7", "+3", " 3", "1_0", "3.0", "1e3", "0x1f", "inf", "nan", "-",
    str(2**24), str(2**24 + 1), str(2**31), str(2**53 + 1), str(2**63 - 1), str(2**63),
    str(-(2**63)), str(-(2**63) - 1), str(2**64), "1" + "0" * 39, "1" + "0" * 400, "9" * 5000,
    "\u0663", "\uff13", "\u00b2", "\u00b9\u00b2", "\u2167", "\U0001d7d1",
)  # fmt: skip
TOKENS = (
    "", ":", "1:", ":1", "1:2:3", "a:1", "1:a", "x", "the", "<pad>", "<bos>", "<eos>", "<unk>",
    "_UNK", "<BOS>", END_OF_UTTERANCE, "__EOU__", "caf\u00e9", "\u65e5\u672c", "\x00", "\x7f",
    "\ufeff", "\U0001f600", "\u0301",
)  # fmt: skip
SPACES = ("\t", " ", "\xa0", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\u3000", "\u200b")
INVALID_UTF8 = (
    b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80", b"\xe2\x82",
)  # fmt: skip
WORDS = ("the", "a", "cat", "sat", "on", "mat", "N", "caf\u00e9", "na\u00efve", "\u65e5\u672c", "x1", "<unk>")

# --- mutations: each returns the changed lines (or bytes) and the lines it changed -----------------
# A mutation that keeps every other line in place returns the set of lines (1-based) it changed;
# one that moves lines returns None. The byte mutations work on the encoded file.


def replace_number(rng, lines):
    """One run of digits in a line becomes one of :data:`NUMBERS`."""
    with_digits = [i for i, line in enumerate(lines) if re.search("[0-9]+", line)]
    if not with_digits:
        return lines, set()
    i = rng.choice(with_digits)
    runs = list(re.finditer("[0-9]+", lines[i]))
    run = runs[rng.randrange(len(runs))]
    lines[i] = lines[i][: run.start()] + rng.choice(NUMBERS) + lines[i][run.end() :]
    return lines, {i + 1}


def change_field(rng, lines):
    """A whitespace-separated field of a line is replaced, removed, repeated, or one is added."""
    i = rng.randrange(len(lines))
    fields = lines[i].split(" ")
    j = rng.randrange(len(fields))
    action = rng.randrange(4)
    if action == 0:
        fields[j] = rng.choice(TOKENS)
    elif action == 1:
        del fields[j]
    elif action == 2:
        fields.insert(j, fields[j])
    else:
        fields.insert(j, rng.choice((*TOKENS, *NUMBERS)))
    lines[i] = " ".join(fields)
    return lines, {i + 1}


def cut_line(rng, lines):
    """A line loses its end (or all of it)."""
    i = rng.randrange(len(lines))
    lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    return lines, {i + 1}


def insert_space(rng, lines):
    """A whitespace or invisible character that does not end a line goes into one."""
    i = rng.randrange(len(lines))
    at = rng.randrange(len(lines[i]) + 1)
    lines[i] = lines[i][:at] + rng.choice(SPACES) + lines[i][at:]
    return lines, {i + 1}


def move_lines(rng, lines):
    """A line is removed, repeated, swapped with another, split by a carriage return, or an empty
    line is added."""
    i = rng.randrange(len(lines))
    action = rng.randrange(5)
    if action == 0:
        del lines[i]
    elif action == 1:
        lines.insert(i, lines[i])
    elif action == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif action == 3:
        at = rng.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:at] + "\r" + lines[i][at:]
    else:
        lines.insert(rng.randrange(len(lines) + 1), "")
    return lines, None


# numbers weigh most: each field's range and syntax is a check of its own
LINE_MUTATIONS: tuple[Callable, ...] = (
    *(replace_number,) * 3,
    *(change_field,) * 2,
    cut_line,
    insert_space,
    move_lines,
)


def line_of(data: bytes, offset: int) -> int:
    """The line (1-based, with text mode's line ends) holding byte ``offset`` of ``data``."""
    before = data[:offset].replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return before.count(b"\n") + 1


def count_lines(data: bytes) -> int:
    return len(io.StringIO(data.decode("utf-8", "replace"), newline=None).readlines())


def insert_invalid_utf8(rng, data):
    """Bytes that are not UTF-8 go in at a random place (splitting a character if it falls so)."""
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(INVALID_UTF8) + data[at:], {line_of(data, at)}


def replace_byte(rng, data):
    """One byte becomes any byte."""
    if not data:
        return bytes([rng.randrange(256)]), None
    at = rng.randrange(len(data))
    new = rng.randrange(256)
    changed = data[:at] + bytes([new]) + data[at + 1 :]
    moves_lines = data[at] in b"\r\n" or new in b"\r\n"
    return changed, None if moves_lines else {line_of(data, at)}


def truncate(rng, data):
    """The file ends early, maybe inside a line or a character."""
    at = rng.randrange(len(data) + 1)
    return data[:at], {line_of(data, at)} if at < len(data) else set()


def empty_or_garbage(rng, data):
    """The file becomes empty, or a few random bytes."""
    if rng.random() < 0.5:
        return b"", set()
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24))), None


BYTE_MUTATIONS: tuple[Callable, ...] = (insert_invalid_utf8, replace_byte, truncate, empty_or_garbage)


# --- readers --------------------------------------------------------------------------------------


@dataclass
class Case:
    """The files of one reader call, the reader's options, and what was changed: the file, the
    lines changed (None where lines moved) and the problem a lone mutation must cause; ``warned``
    is filled by :func:`judge` (the ``"<file>, line <n>"`` of each warning)."""

    files: Files
    options: dict
    mutated: str | None = None
    lines: set[int] | None = None
    expect: str | None = None
    warned: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Reader:
    """A public reader: a valid input drawn from a ``random.Random`` (``{file: lines}`` and the
    reader's options), how to call it on a folder, and the checks of what it accepted."""

    name: str
    draw: Callable[[random.Random], tuple[dict[str, list[str]], dict]]
    read: Callable[[Path, dict], object]
    check: Callable[[object, Path, Case], None]


def text_lines(data: bytes | None) -> list[str]:
    """The lines of an accepted file (it must be UTF-8), as text mode reads them, a leading
    byte-order mark being the file's signature and not text."""
    assert data is not None, "a missing file was accepted"
    return io.StringIO(data.decode("utf-8").removeprefix("\ufeff"), newline=None).readlines()


def ascii_int(text: str, low: int, high: int) -> int:
    assert re.fullmatch("-?[0-9]+", text), f"{text!r} was accepted as an integer"
    assert low <= int(text) <= high, f"{text} was accepted outside {low}..{high}"
    return int(text)


# NVDM vocabulary: WORD COUNT per line


def draw_nvdm_vocab(rng):
    words = rng.sample(WORDS, rng.randint(1, 8))
    return {"vocab.new": [f"{w} {rng.randint(0, 10**6)}" for w in words]}, {}


def check_nvdm_vocab(vocab, folder, case):
    entries = [line.split() for line in text_lines(case.files["vocab.new"])]
    assert all(len(e) == 2 for e in entries), "an entry without exactly WORD COUNT was accepted"
    for _, count in entries:
        ascii_int(count, 0, 2**63 - 1)
    assert vocab.words == [w for w, _ in entries]
    assert len(set(vocab.words)) == len(vocab) >= 1


# NVDM features: LABEL ID:COUNT ... per line, against a fixed vocabulary

FEATURE_VOCAB = Vocab([f"w{i}" for i in range(12)])


def draw_nvdm_features(rng):
    V = len(FEATURE_VOCAB)

    def document() -> str:
        label = rng.choice((rng.randint(0, 20), rng.randint(-3, 3), 2**63 - 1, -(2**63)))
        ids = rng.sample(range(1, V + 1), rng.randint(1, 5))
        if rng.random() < 0.05:  # the largest count a corpus holds exactly, alone in its document
            return f"{label} {ids[0]}:{MAX_COUNT}"
        return " ".join([str(label), *(f"{i}:{rng.randint(1, 5)}" for i in ids)]) + rng.choice(("", " "))

    return {"docs.feat": [document() for _ in range(rng.randint(1, 6))]}, {}


def check_nvdm_features(corpus, folder, case):
    docs = [line.split() for line in text_lines(case.files["docs.feat"])]
    V = len(FEATURE_VOCAB)
    assert len(corpus) == len(docs) >= 1 and corpus.indptr.tolist()[0] == 0
    assert corpus.labels.dtype == torch.long
    assert corpus.labels.tolist() == [ascii_int(d[0], -(2**63), 2**63 - 1) for d in docs]
    for b, doc in enumerate(docs):
        expected = {}
        for token in doc[1:]:
            word, count = token.split(":")
            expected[ascii_int(word, 1, V) - 1] = ascii_int(count, 1, MAX_COUNT)
        assert len(expected) == len(doc) - 1, "a repeated word id was accepted"
        start, end = corpus.indptr[b], corpus.indptr[b + 1]
        # exact: a count the float32 storage rounded would differ from the file's integer
        assert (
            dict(zip(corpus.ids[start:end].tolist(), corpus.counts[start:end].tolist(), strict=True))
            == expected
        )
        assert corpus.lengths[b].item() == sum(expected.values()) <= MAX_COUNT
    batch = corpus.batch(torch.arange(len(corpus)))
    assert batch.counts.shape == (len(corpus), V) and torch.equal(batch.lengths, corpus.lengths)
    assert corpus.num_tokens == sum(corpus.lengths.tolist())


# Yahoo vocabulary: TOKEN<TAB>INDEX per line, starting with the specials

YAHOO_HEAD = ("<pad>", "<bos>", "<eos>", "_UNK")


def draw_indexed_vocab(rng):
    words = [*YAHOO_HEAD, *rng.sample([w for w in WORDS if w != "<unk>"], rng.randint(0, 6))]
    return {"vocab.txt": [f"{w}\t{i}" for i, w in enumerate(words)]}, {}


def check_indexed_vocab(vocab, folder, case):
    entries = [line.rstrip("\n").split("\t") for line in text_lines(case.files["vocab.txt"])]
    assert all(len(e) == 2 for e in entries), "an entry without exactly TOKEN<TAB>INDEX was accepted"
    for k, (token, index) in enumerate(entries):
        assert token.split() == [token], f"token {token!r} was accepted"
        assert ascii_int(index, k, k) == k
    assert tuple(token for token, _ in entries[:4]) == YAHOO_HEAD
    assert vocab.words == [*SPECIALS, *(token for token, _ in entries[4:])]
    assert vocab.encode(["_UNK", "<unk>"]) == [UNK, UNK]


# Sentences, one per line, against a fixed vocabulary, with the reader's options drawn too

TEXT_VOCAB = TextVocab([*SPECIALS, "the", "a", "cat", "sat", "on", "mat", "caf\u00e9"])


def _sentence(rng: random.Random, longest: int) -> str:
    tokens = rng.choices([*TEXT_VOCAB.words[4:], "dog", "\u65e5\u672c", "<unk>"], k=rng.randint(1, longest))
    return rng.choice(("", " ")) + " ".join(tokens) + rng.choice(("", " "))


def draw_text(rng):
    options = {
        "max_length": rng.choice((None, rng.randint(1, 6))),
        "long_lines": rng.choice(("truncate", "drop", "error")),
        "empty_lines": rng.choice(("skip", "error")),
    }
    longest = options["max_length"] if options["max_length"] and options["long_lines"] != "truncate" else 8
    lines = [_sentence(rng, longest) for _ in range(rng.randint(1, 6))]
    if options["long_lines"] == "drop" and options["max_length"]:
        lines.append(_sentence(rng, 8))  # may be dropped, and another line is kept
    if options["empty_lines"] == "skip" and rng.random() < 0.5:
        lines.insert(rng.randrange(len(lines) + 1), " ")
    return {"text.txt": lines}, options


def expected_sentences(
    lines: list[str], vocab: TextVocab, max_length=None, long_lines="truncate", empty_lines="error"
):
    """The sentences :meth:`TextCorpus.from_file` must read from ``lines`` with these options."""
    sentences = []
    for line in lines:
        tokens = line.split()
        assert not RESERVED.intersection(tokens), "a reserved token was accepted"
        if not tokens:
            assert empty_lines == "skip", "an empty line was accepted"
            continue
        if max_length is not None and len(tokens) > max_length:
            assert long_lines != "error", "a long line was accepted"
            if long_lines == "drop":
                continue
            tokens = tokens[:max_length]
        sentences.append(vocab.encode(tokens))
    return sentences


def check_text_corpus(corpus: TextCorpus, sentences: list[list[int]]) -> None:
    """``corpus`` holds ``sentences``, with consistent offsets, and batches them."""
    V = len(corpus.vocab)
    assert [corpus.sentence(i) for i in range(len(corpus))] == sentences and len(corpus) >= 1
    assert corpus.lengths.tolist() == [len(s) for s in sentences] and min(corpus.lengths.tolist()) >= 1
    assert corpus.offsets[-1].item() == corpus.ids.numel() == sum(len(s) for s in sentences)
    assert corpus.ids.numel() == 0 or (UNK <= corpus.ids.min().item() and corpus.ids.max().item() < V)
    batch = corpus.batch(torch.arange(len(corpus)))
    assert torch.equal(batch.mask.sum(-1), corpus.lengths + 1)


def check_text(corpus, folder, case):
    check_text_corpus(
        corpus, expected_sentences(text_lines(case.files["text.txt"]), TEXT_VOCAB, **case.options)
    )


# PTB through the registry's reader: the vocabulary is built from the training split

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")


def draw_ptb(rng):
    return {name: [_sentence(rng, 8) for _ in range(rng.randint(1, 4))] for name in PTB_FILES}, {}


def check_ptb(splits, folder, case):
    assert sorted(splits) == ["test", "train", "valid"]
    vocab = splits["train"].vocab
    assert all(splits[s].vocab is vocab for s in splits) and tuple(vocab.words[:4]) == SPECIALS
    train_words = {t for line in text_lines(case.files["ptb.train.txt"]) for t in line.split()}
    assert set(vocab.words[4:]) == train_words - set(SPECIALS)
    for split in ("train", "valid", "test"):
        check_text_corpus(
            splits[split], expected_sentences(text_lines(case.files[f"ptb.{split}.txt"]), vocab)
        )


# DailyDialog: three files per split, a dialogue per line

DIALOG_FILES = ("dialogues.txt", "dialogues_act.txt", "dialogues_emotion.txt")


def draw_dailydialog(rng):
    turns = [rng.randint(1, 4) for _ in range(rng.randint(1, 4))]
    words = ["Hi", "there", "!", ",", "How", "are", "you", "?", "caf\u00e9", "OK", "."]
    files = {
        "dialogues.txt": [
            "".join(
                " ".join(rng.choices(words, k=rng.randint(1, 4))) + f" {END_OF_UTTERANCE} " for _ in range(t)
            )
            for t in turns
        ],
        "dialogues_act.txt": [" ".join(str(rng.randint(1, 4)) for _ in range(t)) + " " for t in turns],
        "dialogues_emotion.txt": [" ".join(str(rng.randint(0, 6)) for _ in range(t)) + " " for t in turns],
    }
    return files, {"lowercase": rng.random() < 0.8, "max_vocab": rng.choice((None, 6, 10_000))}


def check_dailydialog(result, folder, case):
    dialogues, vocab = result
    texts, acts, emotions = (text_lines(case.files[name]) for name in DIALOG_FILES)
    assert len(texts) == len(acts) == len(emotions)
    kept, left_out = [], []
    for n, (text, act, emotion) in enumerate(zip(texts, acts, emotions, strict=True), 1):
        lower = str.lower if case.options["lowercase"] else str
        utterances = [lower(u).split() for u in text.split(END_OF_UTTERANCE)]
        utterances = [u for u in utterances if u]
        assert not RESERVED.intersection(t for u in utterances for t in u), "a reserved token was accepted"
        a, e = [ascii_int(x, 1, 4) for x in act.split()], [ascii_int(x, 0, 6) for x in emotion.split()]
        if len(utterances) == len(a) == len(e):
            kept += [(u, a[t], e[t], n - 1, t) for t, u in enumerate(utterances)]
        else:
            left_out.append(n)
    assert kept, "a split without utterances was accepted"
    assert case.warned == [f"{folder / DIALOG_FILES[0]}, line {n}" for n in left_out]
    fields = (dialogues.acts, dialogues.emotions, dialogues.dialogue, dialogues.turn)
    assert [tuple(t.tolist()) for t in fields] == [tuple(k[i] for k in kept) for i in range(1, 5)]
    check_text_corpus(dialogues.utterances, [vocab.encode(k[0]) for k in kept])
    assert dialogues.utterances.vocab is vocab


READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader(
            "nvdm vocabulary",
            draw_nvdm_vocab,
            lambda f, o: Vocab.from_nvdm_file(f / "vocab.new"),
            check_nvdm_vocab,
        ),
        Reader(
            "nvdm features",
            draw_nvdm_features,
            lambda f, o: BagOfWords.from_nvdm_file(f / "docs.feat", FEATURE_VOCAB),
            check_nvdm_features,
        ),
        Reader(
            "indexed vocabulary",
            draw_indexed_vocab,
            lambda f, o: TextVocab.from_indexed_file(f / "vocab.txt", unk="_UNK"),
            check_indexed_vocab,
        ),
        Reader(
            "text lines",
            draw_text,
            lambda f, o: TextCorpus.from_file(f / "text.txt", TEXT_VOCAB, **o),
            check_text,
        ),
        Reader("ptb folder", draw_ptb, lambda f, o: DATASETS["ptb"].reader(f), check_ptb),
        Reader(
            "dailydialog split", draw_dailydialog, lambda f, o: read_dailydialog(f, **o), check_dailydialog
        ),
    )
}

# the problems of a whole file, which name no line
WHOLE_FILE_PROBLEMS = (
    "not found",
    "file has no",
    "vocabulary is empty",
    "fewer than the four specials",
    "no dialogues",
    "no utterances",
    "lines but",
)


def encode(lines: list[str], rng: random.Random) -> bytes:
    """``lines`` as a UTF-8 file: LF or CRLF line ends, the last one sometimes left out."""
    end = "\r\n" if rng.random() < 0.1 else "\n"
    text = end.join(lines) + (end if lines and rng.random() < 0.9 else "")
    return text.encode("utf-8")


def base_case(reader: Reader, seed: int) -> Case:
    """The reader's valid input drawn with ``seed``."""
    rng = random.Random(seed)
    files, options = reader.draw(rng)
    return Case({name: encode(lines, rng) for name, lines in files.items()}, options)


def draw_case(reader: Reader, rng: random.Random) -> Case:
    """A valid input of ``reader`` with one of its files mutated one to three times by ``rng``."""
    rng_base = random.Random(rng.getrandbits(64))
    files, options = reader.draw(rng_base)
    name = rng.choice(sorted(files))
    if rng.random() < 0.02:
        return Case({**{n: encode(f, rng_base) for n, f in files.items()}, name: None}, options, name, set())
    lines = list(files[name])
    changed: set[int] | None = set()
    mutations = []
    for _ in range(rng.choice((0, 1, 1, 2))):
        mutation = rng.choice(LINE_MUTATIONS)
        lines, touched = mutation(rng, lines)
        mutations.append(mutation)
        changed = None if changed is None or touched is None else changed | touched
        if not lines:
            break
    data = encode(lines, rng_base)
    for _ in range(rng.choice((0, 0, 1)) if mutations else 1):
        mutation = rng.choice(BYTE_MUTATIONS)
        data, touched = mutation(rng, data)
        mutations.append(mutation)
        changed = None if changed is None or touched is None else changed | touched
    lone = mutations == [insert_invalid_utf8]
    files = {n: encode(f, rng_base) for n, f in files.items()}
    return Case({**files, name: data}, options, name, changed, "invalid UTF-8" if lone else None)


@dataclass
class Verdict:
    kind: str  # "accepted", "error", "crash" or "inconsistent"
    detail: str = ""


def write(case: Case, folder: Path) -> None:
    for name, data in case.files.items():
        path = folder / name
        if data is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(data)


def check_error(err: DataFormatError, case: Case, folder: Path) -> None:
    names = {str(folder / name): name for name in case.files}
    assert err.path in names, f"the error names {err.path}, not one of the files"
    name = names[err.path]
    if case.expect is not None:
        assert err.problem.startswith(case.expect) and err.line in case.lines, f"expected {case.expect!r}"
    if err.line is None:
        assert any(p in err.problem for p in WHOLE_FILE_PROBLEMS), "a problem of a line names no line"
        return
    assert name == case.mutated, "a line of a file that was not changed is blamed"
    assert 1 <= err.line <= count_lines(case.files[name]), f"line {err.line} is not in the file"
    if case.lines is not None:
        named = {err.line, *(int(m) for m in re.findall(r"line ([0-9]+)", err.problem))}
        assert named & case.lines, f"line {err.line} was not changed (lines {sorted(case.lines)} were)"


def judge(reader: Reader, case: Case, folder: Path) -> Verdict:
    """Write ``case`` into ``folder``, read it with ``reader`` and check the outcome."""
    write(case, folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = reader.read(folder, case.options)
        except DataFormatError as err:
            result = err
        except Exception:
            return Verdict("crash", traceback.format_exc())
    try:
        assert all(w.category is DataWarning for w in caught), [str(w.message) for w in caught]
        case.warned = [str(w.message).split(": ")[0] for w in caught]
        if isinstance(result, DataFormatError):
            check_error(result, case, folder)
            return Verdict("error", result.problem)
        assert case.expect is None, f"expected {case.expect!r}"
        reader.check(result, folder, case)
        return Verdict("accepted")
    except Exception:
        problem = f"{result}\n" if isinstance(result, DataFormatError) else ""
        return Verdict("inconsistent", problem + traceback.format_exc())
