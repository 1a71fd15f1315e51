import hashlib
import shutil
import zipfile

import pytest
import torch

from fabula.data import BagOfWords, DataFormatError, Vocab, load_dataset, locate, synthetic_nvdm_corpus
from fabula.data.dialog import DataWarning
from fabula.data.registry import DATASETS, DatasetSpec, RemoteFile


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.new"
    path.write_text("apple 10\nbanana 7\ncherry 3\ndate 1\n")
    return path


def write_feat(tmp_path, text):
    path = tmp_path / "docs.feat"
    path.write_text(text)
    return path


def test_vocab_reads_words_in_order(vocab_file):
    vocab = Vocab.from_nvdm_file(vocab_file)
    assert vocab.words == ["apple", "banana", "cherry", "date"]
    assert vocab.index["cherry"] == 2
    assert vocab.sha256 != Vocab(["apple", "banana", "date", "cherry"]).sha256


def test_vocab_duplicate_word_is_an_error(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("a 1\nb 1\na 1\n")
    with pytest.raises(DataFormatError, match="twice"):
        Vocab.from_nvdm_file(path)


def test_feat_file_parsed_with_one_based_ids(tmp_path, vocab_file):
    vocab = Vocab.from_nvdm_file(vocab_file)
    corpus = BagOfWords.from_nvdm_file(write_feat(tmp_path, "3 1:2 4:1\n7 2:5\n"), vocab)
    assert len(corpus) == 2
    assert corpus.labels.tolist() == [3, 7]
    dense = corpus.batch(torch.arange(2)).counts
    assert dense.tolist() == [[2, 0, 0, 1], [0, 5, 0, 0]]
    assert corpus.lengths.tolist() == [3, 5]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("1 1:2\n1 1-2\n", 2, "not of the form ID:COUNT"),
        ("1 x:2\n", 1, "word id 'x'"),
        ("1 1:2\n1 1:1 5:1\n", 2, "out of range 1..4"),
        ("1 0:1\n", 1, "out of range 1..4"),
        ("1 1:-3\n", 1, "count -3 in '1:-3' out of range 1..16777216"),
        ("1 1:1.5\n", 1, "count '1.5' in '1:1.5' is not an integer"),
        ("1 1:1\n2\n", 2, "empty document"),
        ("1 1:1\n\n", 2, "empty line"),
        ("one 1:1\n", 1, "label 'one'"),
        ("1 2:1 2:3\n", 1, "word id 2 appears twice"),
        # found by fuzzing: each crashed with a bare error or loaded a value it cannot hold
        (b"1 1:1\n1 2:\xff\n", 2, "invalid UTF-8 (invalid start byte: b'\\xff')"),
        (f"{2**63} 1:1\n", 1, f"label {2**63} out of range"),
        (f"{-(2**63) - 1} 1:1\n", 1, "out of range -9223372036854775808..9223372036854775807"),
        (f"1 1:1{'0' * 400}\n", 1, "count 10000000000000000000... (401 characters) in '1:100000"),
        (f"1 1:1{'0' * 39}\n", 1, "out of range 1..16777216 (counts are stored as float32"),
        (f"1 1:{2**24 + 1}\n", 1, "count 16777217 in '1:16777217' out of range 1..16777216"),
        (f"1 1:{2**23} 2:{2**23 + 1}\n", 1, "document of 16777217 tokens > 16777216"),
        ("1 1:\u0663\n", 1, "count '\u0663' in '1:\u0663' is not an integer"),  # int() reads 3
        ("1 1:+3\n", 1, "count '+3'"),
        ("1 1:1_0\n", 1, "count '1_0'"),
        ("1 \u00b2:1\n", 1, "word id '\u00b2' in '\u00b2:1' is not an integer"),
        (b"1 1:1\r2 2:1\r\xc3 1:1\r", 3, "invalid UTF-8"),  # \r ends lines, as in text mode
    ],
)
def test_malformed_feat_names_file_line_and_problem(tmp_path, vocab_file, text, line, problem):
    vocab = Vocab.from_nvdm_file(vocab_file)
    path = tmp_path / "docs.feat"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError) as err:
        BagOfWords.from_nvdm_file(path, vocab)
    assert err.value.line == line
    assert str(path) in str(err.value) and f"line {line}" in str(err.value)
    assert problem in str(err.value)


def test_the_largest_counts_load_exactly(tmp_path, vocab_file):
    vocab = Vocab.from_nvdm_file(vocab_file)
    corpus = BagOfWords.from_nvdm_file(
        write_feat(tmp_path, f"{2**63 - 1} 1:{2**24}\n-5 1:{2**23} 2:{2**23}\n"), vocab
    )
    assert corpus.labels.tolist() == [2**63 - 1, -5]
    assert corpus.lengths.tolist() == [2**24, 2**24] and corpus.num_tokens == 2**25


@pytest.mark.parametrize(
    "text, line, problem",
    [
        (b"a 1\nb\xe2\x82 2\n", 2, "invalid UTF-8"),
        ("a 1\nb\n", 2, "expected WORD COUNT, got 'b'"),
        ("a 1\nb 2 3\n", 2, "expected WORD COUNT"),
        ("a 1\nb \u00b2\n", 2, "count '\u00b2' is not an integer"),
        ("a 1\n\nb 2\n", 2, "expected WORD COUNT, got ''"),
        ("a 1\nb 1\na 1\n", 3, "the word 'a' appears twice (first on line 1)"),
    ],
)
def test_malformed_vocabulary_names_file_line_and_problem(tmp_path, text, line, problem):
    path = tmp_path / "vocab.new"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError) as err:
        Vocab.from_nvdm_file(path)
    assert (err.value.path, err.value.line) == (str(path), line)
    assert problem in err.value.problem


def test_missing_and_empty_files(tmp_path, vocab_file):
    vocab = Vocab.from_nvdm_file(vocab_file)
    with pytest.raises(DataFormatError, match="not found"):
        BagOfWords.from_nvdm_file(tmp_path / "nope.feat", vocab)
    with pytest.raises(DataFormatError, match="no documents"):
        BagOfWords.from_nvdm_file(write_feat(tmp_path, ""), vocab)


def test_batches_cover_the_corpus_once_and_shuffle_by_seed():
    corpus, _ = synthetic_nvdm_corpus(num_train=50, num_test=5, vocab_size=30, latent_dim=2)
    train = corpus["train"]
    seen = torch.cat([b.index for b in train.batches(8, shuffle=True, seed=3)])
    assert sorted(seen.tolist()) == list(range(50))
    again = torch.cat([b.index for b in train.batches(8, shuffle=True, seed=3)])
    other = torch.cat([b.index for b in train.batches(8, shuffle=True, seed=4)])
    assert torch.equal(seen, again) and not torch.equal(seen, other)
    batch = train.batch(torch.tensor([4, 1]))
    assert torch.equal(batch.lengths, train.lengths[[4, 1]])


def test_synthetic_corpus_is_reproducible_from_its_seed():
    a, _ = synthetic_nvdm_corpus(seed=1, num_train=20, num_test=5)
    b, _ = synthetic_nvdm_corpus(seed=1, num_train=20, num_test=5)
    c, _ = synthetic_nvdm_corpus(seed=2, num_train=20, num_test=5)
    assert torch.equal(a["train"].counts, b["train"].counts)
    assert not torch.equal(a["train"].counts, c["train"].counts)
    assert (a["train"].lengths >= 5).all()


def test_registry_refuses_missing_or_altered_local_copies(tmp_path, shared_data):
    with pytest.raises(DataFormatError, match="missing file of dataset '20news'"):
        locate("20news", tmp_path)
    copy = tmp_path / "20news"
    shutil.copytree(shared_data / "20news", copy)
    (copy / "vocab.new").chmod(0o644)
    with (copy / "vocab.new").open("a") as f:
        f.write("extra 1\n")
    with pytest.raises(DataFormatError, match="sha256"):
        locate("20news", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        locate("nope", tmp_path)


def test_a_file_published_inside_a_zip_is_fetched_extracted_and_verified(tmp_path, monkeypatch):
    archive = tmp_path / "release.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train/dialogues_train.txt", "hello there __eou__\n")
        z.writestr("other.txt", "x")
    digest = hashlib.sha256(b"hello there __eou__\n").hexdigest()
    url = archive.as_uri()  # fetched like any URL, without the network
    spec = lambda member, sha: DatasetSpec(  # noqa: E731
        member, member, "lines", (RemoteFile("train/dialogues.txt", url, sha, member),), dict, "a zip member"
    )
    monkeypatch.setenv("FABULA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(DATASETS, "toy", spec("train/dialogues_train.txt", digest))
    folder = locate("toy")
    assert (folder / "train" / "dialogues.txt").read_text() == "hello there __eou__\n"
    monkeypatch.setitem(DATASETS, "toy2", spec("missing.txt", digest))
    with pytest.raises(DataFormatError, match="the archive has no member 'missing.txt'"):
        locate("toy2")
    monkeypatch.setitem(DATASETS, "toy3", spec("other.txt", digest))
    with pytest.raises(DataFormatError, match="sha256"):
        locate("toy3")


@pytest.mark.integration
def test_dailydialog_registry_entry_reads_the_shared_copy_as_sentences(shared_data):
    with pytest.warns(DataWarning, match="line 7852"):
        splits = load_dataset("dailydialog", shared_data)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [87171 - 12, 8069, 7740]
    assert splits["test"].vocab is splits["train"].vocab


@pytest.mark.integration
def test_20news_loads_with_the_documented_counts(shared_data):
    data = load_dataset("20news", shared_data)
    assert (len(data["train"]), len(data["test"])) == (11268, 7505)
    assert (data["train"].num_tokens, data["test"].num_tokens) == (1128881, 720898)
    assert len(data["train"].vocab) == 2000 and data["train"].vocab is data["test"].vocab
    assert set(data["train"].labels.unique().tolist()) == set(range(1, 21))
