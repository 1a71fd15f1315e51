"""A researcher's own corpus (``fabula.data.read_corpus``): formats, splits, tokenization, and the
one-line errors of bad input; and the byte-order mark that no reader takes for text."""

import dataclasses
import json

import pytest

from fabula.data import (
    DOCUMENTS,
    SENTENCES,
    BagOfWords,
    DataFormatError,
    Tokenization,
    Vocab,
    read_corpus,
)
from fabula.data.dialog import read_dailydialog
from fabula.data.files import numbered_lines
from fabula.data.text import SPECIALS, UNK, TextCorpus, TextVocab
from fabula.errors import SettingsError

BOM = "\ufeff"


def write(folder, files: dict):
    """Write ``{name: text or bytes}`` into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return folder


def words(corpus: TextCorpus) -> list[list[str]]:
    return [corpus.vocab.decode(corpus.sentence(i)) for i in range(len(corpus))]


def bags(corpus: BagOfWords) -> list[dict[str, int]]:
    out = []
    for b in range(len(corpus)):
        start, end = corpus.indptr[b], corpus.indptr[b + 1]
        ids, counts = corpus.ids[start:end].tolist(), corpus.counts[start:end].tolist()
        out.append({corpus.vocab[i]: int(c) for i, c in zip(ids, counts, strict=True)})
    return out


def lines(n: int, word: str = "a") -> str:
    """``n`` lines, line ``i`` holding ``i + 1`` words: a line's length tells it apart."""
    return "".join(" ".join([word] * (i + 1)) + "\n" for i in range(n))


def lengths(corpus: TextCorpus) -> list[int]:
    return corpus.lengths.tolist()


# --- sentences ------------------------------------------------------------------------------------


def test_sentences_from_a_folder_with_a_validation_file(tmp_path):
    folder = write(tmp_path / "c", {"train.txt": "a b a\n\nc a\n", "valid.txt": "a d\n", "test.txt": "b c\n"})
    corpora, description = read_corpus(folder, SENTENCES)
    vocab = corpora["train"].vocab
    assert isinstance(vocab, TextVocab) and all(c.vocab is vocab for c in corpora.values())
    assert vocab.words == [*SPECIALS, "a", "b", "c"]  # by count, ties alphabetical
    assert [corpora["train"].sentence(i) for i in range(2)] == [[4, 5, 4], [6, 4]]  # the blank line skipped
    assert corpora["valid"].sentence(0) == [4, UNK]  # "d" is not a training word
    assert words(corpora["test"]) == [["b", "c"]]
    assert description == {
        "path": str(folder.resolve()),
        "kind": "sentences",
        "format": "txt",
        "files": {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
        "held_out": {},
        "tokenization": dataclasses.asdict(Tokenization()),
        "sizes": {"train": 2, "valid": 1, "test": 1},
        "vocabulary": 7,
    }
    json.dumps(description)


@pytest.mark.parametrize(
    "names",
    [
        ("train.txt", "dev.txt", "test.txt"),
        ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        ("my.corpus.train.txt", "my.corpus.dev.txt", "my.corpus.test.txt"),
    ],
)
def test_split_files_are_named_by_their_split(tmp_path, names):
    folder = write(tmp_path, dict(zip(names, ("x y\n", "y\n", "x\n"), strict=True)) | {"notes.txt": "zzz\n"})
    corpora, description = read_corpus(folder, SENTENCES)
    assert [words(corpora[s]) for s in ("train", "valid", "test")] == [[["x", "y"]], [["y"]], [["x"]]]
    assert description["files"] == dict(zip(("train", "valid", "test"), names, strict=True))


def test_sentences_from_json_lines(tmp_path):
    records = [{"text": "Hello world", "id": 1}, {"text": "world"}]
    folder = write(
        tmp_path,
        {
            "train.jsonl": "".join(json.dumps(r) + "\n" for r in records) + "\n",
            "test.jsonl": '{"text": "world again"}\n',
            "valid.jsonl": '{"text": "Hello"}\n',
        },
    )
    corpora, description = read_corpus(folder, SENTENCES)
    assert corpora["train"].vocab.words[4:] == ["world", "Hello"]
    assert words(corpora["train"]) == [["Hello", "world"], ["world"]]
    assert words(corpora["test"]) == [["world", "<unk>"]]
    assert description["format"] == "jsonl"


def test_a_missing_validation_split_is_held_out_from_train_by_the_seed(tmp_path):
    folder = write(tmp_path, {"train.txt": lines(30), "test.txt": "a\n"})
    corpora, description = read_corpus(folder, SENTENCES, seed=0)
    train, valid = lengths(corpora["train"]), lengths(corpora["valid"])
    assert (len(train), len(valid)) == (27, 3)  # a share 0.1
    assert sorted(train + valid) == list(range(1, 31)) and valid == sorted(valid)  # disjoint, file order
    assert description["held_out"] == {"valid": "share 0.1 of train, seed 0"}
    assert description["files"]["valid"] == "train.txt" and description["sizes"]["valid"] == 3
    again, _ = read_corpus(folder, SENTENCES, seed=0)
    assert lengths(again["valid"]) == valid
    other, _ = read_corpus(folder, SENTENCES, seed=1)
    assert lengths(other["valid"]) != valid
    quarter, _ = read_corpus(folder, SENTENCES, Tokenization(held_out=0.25))
    assert len(quarter["valid"]) == 8  # round(7.5)


def test_a_single_file_is_train_with_valid_and_test_held_out(tmp_path):
    file = write(tmp_path, {"mine.txt": lines(20)}) / "mine.txt"
    corpora, description = read_corpus(file, SENTENCES, seed=5)
    parts = [lengths(corpora[s]) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [16, 2, 2]
    assert sorted(sum(parts, [])) == list(range(1, 21))
    assert description["files"] == {"train": "mine.txt", "valid": "mine.txt", "test": "mine.txt"}
    assert description["held_out"] == {
        "valid": "share 0.1 of train, seed 5",
        "test": "share 0.1 of train, seed 5",
    }
    assert description["path"] == str(file.resolve())


def test_reading_again_with_the_saved_vocabulary_reproduces_the_splits(tmp_path):
    file = write(tmp_path, {"all.txt": "".join(f"w{i} w{i % 3} common\n" for i in range(40))}) / "all.txt"
    tokenization = Tokenization(min_count=2)
    first, _ = read_corpus(file, SENTENCES, tokenization, seed=7)
    vocab = first["train"].vocab
    again, _ = read_corpus(file, SENTENCES, tokenization, seed=7, vocab=vocab)
    for split in first:
        assert again[split].vocab is vocab
        assert again[split].ids.tolist() == first[split].ids.tolist()
        assert lengths(again[split]) == lengths(first[split])
    # the vocabulary is used as is, never rebuilt
    given = TextVocab([*SPECIALS, "common"])
    corpora, description = read_corpus(file, SENTENCES, tokenization, seed=7, vocab=given)
    assert corpora["train"].sentence(0) == [UNK, UNK, 4] and description["vocabulary"] == 5


# --- documents ------------------------------------------------------------------------------------


def test_documents_from_text_lines(tmp_path):
    folder = write(
        tmp_path,
        {
            "train.txt": "the cat sat on the mat\nthe dog\n",
            "valid.txt": "a cat\nunknown words only\n",
            "test.txt": "the the dog\n",
        },
    )
    corpora, description = read_corpus(folder, DOCUMENTS)
    vocab = corpora["train"].vocab
    assert type(vocab) is Vocab and vocab.words == ["the", "cat", "dog", "mat", "on", "sat"]
    assert bags(corpora["train"]) == [{"the": 2, "cat": 1, "mat": 1, "on": 1, "sat": 1}, {"the": 1, "dog": 1}]
    assert bags(corpora["valid"]) == [{"cat": 1}]  # out-of-vocabulary words dropped, then the empty document
    assert bags(corpora["test"]) == [{"the": 2, "dog": 1}]
    assert corpora["train"].lengths.tolist() == [6, 2]
    assert description["sizes"] == {"train": 2, "valid": 1, "test": 1}
    assert description["left_out"] == {"valid": 1}


def test_documents_from_json_lines_with_held_out_validation(tmp_path):
    train = "".join(json.dumps({"text": f"doc{i} shared"}) + "\n" for i in range(10))
    folder = write(tmp_path, {"train.jsonl": train, "test.jsonl": '{"text": "shared doc3 doc3"}\n'})
    corpora, description = read_corpus(folder, DOCUMENTS, seed=2)
    (held,) = bags(corpora["valid"])
    kept = bags(corpora["train"])
    assert len(kept) == 9 and held not in kept and held["shared"] == 1
    assert "shared" in corpora["train"].vocab.index
    test = bags(corpora["test"])[0]
    assert test["shared"] == 1 and test.get("doc3", 0) in (0, 2)
    assert description["format"] == "jsonl" and description["held_out"] == {
        "valid": "share 0.1 of train, seed 2"
    }


NVDM_VOCAB = "cat 5\ndog 3\nmat 2\n"


@pytest.mark.parametrize("vocab_name", ["vocab.new", "vocab.txt"])
def test_documents_in_the_nvdm_format(tmp_path, vocab_name):
    train = "".join(f"{i % 2} 1:{i + 1} 3:2\n" for i in range(10))
    folder = write(tmp_path, {"train.feat": train, "test.feat": "0 2:4\n", vocab_name: NVDM_VOCAB})
    corpora, description = read_corpus(folder, DOCUMENTS, seed=0)
    assert corpora["train"].vocab.words == ["cat", "dog", "mat"]
    assert bags(corpora["test"]) == [{"dog": 4}]
    cats = sorted(b["cat"] for s in ("train", "valid") for b in bags(corpora[s]))
    assert cats == list(range(1, 11)) and len(corpora["valid"]) == 1
    assert description["format"] == "feat" and description["held_out"] == {
        "valid": "share 0.1 of train, seed 0"
    }
    again, _ = read_corpus(folder, DOCUMENTS, seed=0, vocab=corpora["train"].vocab)
    assert bags(again["valid"]) == bags(corpora["valid"])


def test_nvdm_files_refuse_tokenization_options(tmp_path):
    folder = write(
        tmp_path, {"train.feat": "0 1:1\n0 2:1\n", "test.feat": "0 1:1\n", "vocab.new": NVDM_VOCAB}
    )
    with pytest.raises(SettingsError, match="train.feat: tokenization lowercase, min_count refused"):
        read_corpus(folder, DOCUMENTS, Tokenization(lowercase=True, min_count=2, held_out=0.5))
    assert len(read_corpus(folder, DOCUMENTS, Tokenization(held_out=0.5))[0]["valid"]) == 1


@pytest.mark.parametrize(
    "vocab_files, problem",
    [
        ({}, "no vocabulary file (vocab.new or vocab.txt)"),
        ({"vocab.new": NVDM_VOCAB, "vocab.txt": NVDM_VOCAB}, "both"),
    ],
)
def test_nvdm_files_need_one_vocabulary_file(tmp_path, vocab_files, problem):
    folder = write(
        tmp_path, {"train.feat": "0 1:1\n", "test.feat": "0 1:1\n", "valid.feat": "0 1:1\n"} | vocab_files
    )
    with pytest.raises(DataFormatError) as err:
        read_corpus(folder, DOCUMENTS)
    assert err.value.path == str(folder.resolve()) and problem in err.value.problem


# --- tokenization ---------------------------------------------------------------------------------

TRAIN = "The cat saw the dog\nthe dog ran\nA cat\n"


def read_sentences(tmp_path, tokenization, train=TRAIN, test="the cat\n"):
    folder = write(tmp_path / "s", {"train.txt": train, "valid.txt": test, "test.txt": test})
    return read_corpus(folder, SENTENCES, tokenization)[0]


def test_lowercase(tmp_path):
    assert read_sentences(tmp_path, Tokenization()).get("train").vocab.words[4:6] == ["cat", "dog"]
    corpora = read_sentences(tmp_path, Tokenization(lowercase=True))
    assert corpora["train"].vocab.words[4:] == ["the", "cat", "dog", "a", "ran", "saw"]
    assert corpora["train"].sentence(0) == [4, 5, 9, 4, 6]


def test_vocab_size_and_min_count(tmp_path):
    tokenization = Tokenization(lowercase=True, vocab_size=2)
    assert read_sentences(tmp_path, tokenization)["train"].vocab.words == [*SPECIALS, "the", "cat"]
    corpora = read_sentences(tmp_path, Tokenization(lowercase=True, min_count=2))
    assert corpora["train"].vocab.words[4:] == ["the", "cat", "dog"]
    assert words(corpora["train"])[2] == ["<unk>", "cat"]


def test_max_length_leaves_out_long_training_sentences_only(tmp_path):
    corpora = read_sentences(tmp_path, Tokenization(max_length=3), test="the cat the cat dog\n")
    assert lengths(corpora["train"]) == [3, 2]
    assert lengths(corpora["test"]) == [5]  # evaluation splits are kept whole
    assert corpora["train"].vocab.words[4:] == ["A", "cat", "dog", "ran", "the"]  # "The", "saw" were left out


def test_max_length_is_reported(tmp_path):
    folder = write(tmp_path, {"train.txt": TRAIN, "test.txt": "cat\n", "valid.txt": "cat\n"})
    assert read_corpus(folder, SENTENCES, Tokenization(max_length=2))[1]["left_out"] == {"train": 2}


def test_stop_words_are_left_out_of_documents(tmp_path):
    (tmp_path / "stop.txt").write_text("THE\n\n  a  \n")
    folder = write(tmp_path / "d", {"train.txt": TRAIN, "test.txt": "the dog\n", "valid.txt": "cat\n"})
    tokenization = Tokenization(lowercase=True, stop_words=str(tmp_path / "stop.txt"))
    corpora, description = read_corpus(folder, DOCUMENTS, tokenization)
    assert corpora["train"].vocab.words == ["cat", "dog", "ran", "saw"]
    assert bags(corpora["train"]) == [{"cat": 1, "saw": 1, "dog": 1}, {"dog": 1, "ran": 1}, {"cat": 1}]
    assert bags(corpora["test"]) == [{"dog": 1}]
    assert description["tokenization"]["stop_words"] == str(tmp_path / "stop.txt")


def test_documents_vocab_size_and_min_count(tmp_path):
    folder = write(tmp_path, {"train.txt": "b a b\nc a b\n", "test.txt": "a c\n", "valid.txt": "c a\n"})
    assert read_corpus(folder, DOCUMENTS, Tokenization(vocab_size=2))[0]["train"].vocab.words == ["b", "a"]
    corpora, description = read_corpus(folder, DOCUMENTS, Tokenization(min_count=2))
    assert bags(corpora["test"]) == [{"a": 1}] and bags(corpora["valid"]) == [{"a": 1}]


@pytest.mark.parametrize(
    "kind, tokenization, problem",
    [
        (SENTENCES, Tokenization(stop_words="stop.txt"), "tokenization stop_words refused"),
        (DOCUMENTS, Tokenization(max_length=3), "tokenization max_length refused"),
    ],
)
def test_options_a_kind_has_no_use_for_are_refused(tmp_path, kind, tokenization, problem):
    folder = write(tmp_path, {"train.txt": "a\nb\n", "test.txt": "a\n"})
    with pytest.raises(SettingsError, match=problem):
        read_corpus(folder, kind, tokenization)


@pytest.mark.parametrize(
    "values", [{"held_out": 0}, {"held_out": 1.0}, {"vocab_size": 0}, {"min_count": 0}, {"max_length": -1}]
)
def test_tokenization_ranges(values):
    with pytest.raises(SettingsError, match=f"--{next(iter(values)).replace('_', '-')}"):
        Tokenization(**values)


# --- bad input ------------------------------------------------------------------------------------


def error_of(path, kind=SENTENCES, tokenization=None) -> DataFormatError:
    with pytest.raises(DataFormatError) as err:
        read_corpus(path, kind, tokenization or Tokenization())
    assert "\n" not in str(err.value)
    return err.value


def test_a_missing_path(tmp_path):
    err = error_of(tmp_path / "nowhere")
    assert err.path == str(tmp_path / "nowhere") and "not found" in err.problem


@pytest.mark.parametrize(
    "kind, files, missing",
    [
        (SENTENCES, {"test.txt": "a\n"}, "no train.txt (or .jsonl, "),
        (DOCUMENTS, {"train.txt": "a\n", "valid.txt": "a\n"}, "no test.txt (or .jsonl/.feat, "),
        (SENTENCES, {"train.feat": "0 1:1\n", "test.feat": "0 1:1\n"}, "no train.txt"),
    ],
)
def test_a_folder_without_train_or_test(tmp_path, kind, files, missing):
    err = error_of(write(tmp_path, files), kind)
    assert err.path == str(tmp_path.resolve()) and missing in err.problem


@pytest.mark.parametrize(
    "names", [("valid.txt", "dev.txt"), ("ptb.train.txt", "train.txt"), ("test.jsonl", "test.txt")]
)
def test_two_files_claiming_one_split(tmp_path, names):
    folder = write(tmp_path, {"train.txt": "a\n", "test.txt": "a\n"} | dict.fromkeys(names, "a\n"))
    err = error_of(folder)
    assert all(name in err.problem for name in names)


def test_split_files_of_mixed_formats(tmp_path):
    err = error_of(write(tmp_path, {"train.txt": "a\n", "test.jsonl": '{"text": "a"}\n'}))
    assert "mix formats (.jsonl, .txt)" in err.problem


def test_a_single_file_of_an_unknown_format(tmp_path):
    err = error_of(write(tmp_path, {"data.csv": "a\n"}) / "data.csv")
    assert err.path.endswith("data.csv") and "read from .txt, .jsonl files" in err.problem


@pytest.mark.parametrize(
    "content, line, problem",
    [
        (b"a b\nc \xff d\n", 2, "invalid UTF-8"),
        (b"", None, "the file is empty"),
        (BOM.encode(), None, "the file is empty"),
        (b"\n  \n\t\n", None, "no data: each of the 3 lines is blank"),
        (b"a b\nthe <eos> here\n", 2, "token '<eos>' is reserved"),
    ],
)
def test_bad_training_files(tmp_path, content, line, problem):
    folder = write(tmp_path, {"train.txt": content, "test.txt": "a\n"})
    err = error_of(folder)
    assert (err.path, err.line) == (str(folder.resolve() / "train.txt"), line)
    assert problem in err.problem


def test_a_reserved_token_after_lower_casing(tmp_path):
    folder = write(tmp_path, {"train.txt": "a <BOS>\n", "valid.txt": "a\n", "test.txt": "a\n"})
    assert read_corpus(folder, SENTENCES)[0]["train"].vocab.words[4:] == ["<BOS>", "a"]
    err = error_of(folder, tokenization=Tokenization(lowercase=True))
    assert err.line == 1 and "'<bos>' is reserved" in err.problem


def test_every_sentence_too_long(tmp_path):
    folder = write(tmp_path, {"train.txt": "a b c\nd e f g\n", "test.txt": "a\n"})
    err = error_of(folder, tokenization=Tokenization(max_length=2))
    assert err.path.endswith("train.txt") and "no training sentence of at most 2 words" in err.problem


@pytest.mark.parametrize(
    "line, problem",
    [
        ("[1, 2]", 'expected a JSON object with a string "text" field'),
        ('{"txt": "a"}', 'expected a JSON object with a string "text" field'),
        ('{"text": 3}', 'expected a JSON object with a string "text" field'),
        ('{"text": "a"', "not JSON (Expecting ',' delimiter at column 13)"),
        ("a b", "not JSON"),
    ],
)
def test_bad_json_lines(tmp_path, line, problem):
    folder = write(
        tmp_path, {"train.jsonl": '{"text": "a"}\n\n' + line + "\n", "test.jsonl": '{"text": "a"}\n'}
    )
    err = error_of(folder)
    assert (err.path, err.line) == (str(folder.resolve() / "train.jsonl"), 3)
    assert problem in err.problem


@pytest.mark.parametrize("kind", [SENTENCES, DOCUMENTS])
def test_a_test_split_without_a_known_word(tmp_path, kind):
    folder = write(tmp_path, {"train.txt": "a b\nb c\n", "valid.txt": "a\n", "test.txt": "x y\n\nz\n"})
    err = error_of(folder, kind)
    assert (
        err.path.endswith("test.txt")
        and "no word of the test split is in the training vocabulary" in err.problem
    )


def test_documents_without_a_word_left(tmp_path):
    (tmp_path / "stop.txt").write_text("a\nb\n")
    folder = write(tmp_path / "d", {"train.txt": "a b\nb a\n", "test.txt": "a\n"})
    err = error_of(folder, DOCUMENTS, Tokenization(stop_words=str(tmp_path / "stop.txt")))
    assert err.path.endswith("train.txt") and "no training document keeps a word" in err.problem


def test_too_few_lines_to_hold_out(tmp_path):
    err = error_of(write(tmp_path, {"one.txt": "a b\nc\n"}) / "one.txt")
    assert "2 training lines are too few to hold out valid and test" in err.problem


@pytest.mark.parametrize(
    "content, line, problem", [(None, None, "stop-word file not found"), (b"a\n\xc3\n", 2, "invalid UTF-8")]
)
def test_an_unreadable_stop_word_file(tmp_path, content, line, problem):
    stop = tmp_path / "stop.txt"
    if content is not None:
        stop.write_bytes(content)
    folder = write(tmp_path / "d", {"train.txt": "a b\n", "test.txt": "a\n", "valid.txt": "b\n"})
    err = error_of(folder, DOCUMENTS, Tokenization(stop_words=str(stop)))
    assert (err.path, err.line) == (str(stop), line) and problem in err.problem


def test_an_unknown_kind(tmp_path):
    with pytest.raises(SettingsError, match="kind must be 'sentences' or 'documents', got 'tokens'"):
        read_corpus(tmp_path, "tokens")


# --- a byte-order mark is the file's signature, not part of its first word -------------------------


def test_numbered_lines_leaves_out_a_leading_byte_order_mark_only(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text(BOM + "a\r\n" + BOM + "b\n")
    assert list(numbered_lines(path, "file")) == [(1, "a\n"), (2, BOM + "b\n")]


def test_text_vocabulary_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text(BOM + "<pad>\t0\n<bos>\t1\n<eos>\t2\n_UNK\t3\nhello\t4\n")
    assert TextVocab.from_indexed_file(path).words == [*SPECIALS, "hello"]


def test_nvdm_vocabulary_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "vocab.new"
    path.write_text(BOM + "cat 3\ndog 2\n")
    assert Vocab.from_nvdm_file(path).words == ["cat", "dog"]


def test_text_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(BOM + "cat sat\n")
    assert TextCorpus.from_file(path, TextVocab([*SPECIALS, "cat", "sat"])).sentence(0) == [4, 5]


def test_dailydialog_with_a_byte_order_mark(tmp_path):
    write(
        tmp_path,
        {
            "dialogues.txt": BOM + "Hello there __eou__ Hi __eou__\n",
            "dialogues_act.txt": BOM + "1 2\n",
            "dialogues_emotion.txt": BOM + "0 0\n",
        },
    )
    dialogues, vocab = read_dailydialog(tmp_path, lowercase=False)
    assert sorted(vocab.words[4:]) == ["Hello", "Hi", "there"]
    assert dialogues.acts.tolist() == [1, 2]


@pytest.mark.parametrize("name, first", [("train.txt", "cat"), ("train.jsonl", '{"text": "cat"}')])
def test_user_corpus_with_a_byte_order_mark(tmp_path, name, first):
    folder = write(
        tmp_path, {name: BOM + first + "\n" + first + "\n", name.replace("train", "test"): first + "\n"}
    )
    corpora, _ = read_corpus(folder, SENTENCES, Tokenization(held_out=0.5))
    assert corpora["train"].vocab.words[4:] == ["cat"] and corpora["test"].sentence(0) == [4]
