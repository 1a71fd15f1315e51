import pytest
import torch

from fabula.data import DataFormatError, load_dataset
from fabula.data.registry import DATASETS
from fabula.data.synthetic import synthetic_sentence_corpus
from fabula.data.text import BOS, EOS, PAD, UNK, TextBatch, TextCorpus, TextVocab


def test_vocab_build_orders_by_count_and_maps_unknowns():
    vocab = TextVocab.build([["b", "a", "b", "<unk>"], ["c", "b", "a"]])
    assert vocab.words == ["<pad>", "<bos>", "<eos>", "<unk>", "b", "a", "c"]
    assert vocab.encode(["a", "zebra", "<unk>", "c"]) == [5, UNK, UNK, 6]
    assert vocab.decode([BOS, 5, 4, EOS, 6]) == ["a", "b"]
    assert TextVocab.build([["b", "a", "b"]], max_size=5).words[4:] == ["b"]


def test_indexed_vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("<pad>\t0\n<bos>\t1\n<eos>\t2\n_UNK\t3\nhello\t4\n")
    vocab = TextVocab.from_indexed_file(path)
    assert vocab.encode(["hello", "_UNK", "bye"]) == [4, UNK, UNK]
    path.write_text("<pad>\t0\n<bos>\t1\n<eos>\t2\n_UNK\t3\nhello\t7\n")
    with pytest.raises(DataFormatError, match="line 5.*out of order"):
        TextVocab.from_indexed_file(path)


HEAD = "<pad>\t0\n<bos>\t1\n<eos>\t2\n_UNK\t3\n"


@pytest.mark.parametrize(
    "text, line, problem",
    [
        (HEAD + "hello\t\u00b2\n", 5, "index '\u00b2' is not an integer"),  # str.isdigit accepts it
        (HEAD + "hello\t\u0664\n", 5, "index '\u0664' is not an integer"),  # int() reads it as 4
        (HEAD + "hello\t+4\n", 5, "index '+4' is not an integer"),
        (
            HEAD + "hello\t" + "9" * 5000 + "\n",
            5,
            "index 99999999999999999999... (5000 characters) out of range 0..",
        ),
        (HEAD.encode() + b"hel\xc0\xafo\t4\n", 5, "invalid UTF-8"),  # an overlong "/"
        (HEAD + "hello\n", 5, "expected TOKEN<TAB>INDEX, got 'hello'"),
        (HEAD + "\t4\n", 5, "token '' is empty or holds whitespace"),
        (HEAD + "two words\t4\n", 5, "token 'two words' is empty or holds whitespace"),
        (HEAD + "hello\t4\n<bos>\t5\n", 6, "the word '<bos>' appears twice (first on line 2)"),
        (HEAD + "_UNK\t4\n", 5, "the word '_UNK' appears twice (first on line 4)"),
        (HEAD + "<unk>\t4\n", 5, "'<unk>' names id 3, which this file spells '_UNK'"),
        ("<s>\t0\n<bos>\t1\n<eos>\t2\n_UNK\t3\n", 1, "entry 0 must be '<pad>', got '<s>'"),
        (HEAD.replace("_UNK", "<unk>"), 4, "entry 3 must be '_UNK', got '<unk>'"),
        (HEAD[: HEAD.index("_UNK")], None, "3 entries, fewer than the four specials"),
    ],
)
def test_malformed_indexed_vocab_names_file_line_and_problem(tmp_path, text, line, problem):
    path = tmp_path / "vocab.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataFormatError) as err:
        TextVocab.from_indexed_file(path)
    assert (err.value.path, err.value.line) == (str(path), line)
    assert problem in err.value.problem


def test_text_that_is_not_utf8_is_refused_naming_its_line(tmp_path):
    path = tmp_path / "ptb.train.txt"
    path.write_bytes(b" a b \r\n c \r\n d \xff e \n")
    vocab = TextVocab.build([["a", "b", "c"]])
    with pytest.raises(DataFormatError, match=r"ptb.train.txt, line 3: invalid UTF-8 \(invalid start byte"):
        TextCorpus.from_file(path, vocab)
    with pytest.raises(DataFormatError, match=r"ptb.train.txt, line 3: invalid UTF-8"):
        DATASETS["ptb"].reader(tmp_path)  # builds its vocabulary from this file first
    path.write_bytes(b" a b \r\n c \r d\n")
    corpus = TextCorpus.from_file(path, vocab)  # \r\n and \r end lines, as in text mode
    assert [vocab.decode(corpus.sentence(i)) for i in range(len(corpus))] == [["a", "b"], ["c"], ["<unk>"]]


def test_reserved_tokens_are_refused_naming_their_line(tmp_path):
    vocab = TextVocab.build([["a"]])
    path = write(tmp_path, "a <unk> a\na <eos> b\n")
    with pytest.raises(
        DataFormatError, match="s.txt, line 2: token '<eos>' is reserved for the batches' markers"
    ):
        TextCorpus.from_file(path, vocab)


def write(tmp_path, text):
    path = tmp_path / "s.txt"
    path.write_text(text)
    return path


def test_corpus_rules_for_empty_and_long_lines(tmp_path):
    vocab = TextVocab.build([["a", "b", "c"]])
    path = write(tmp_path, " a b \n\nc a b c a\n")
    with pytest.raises(DataFormatError, match="line 2: empty line"):
        TextCorpus.from_file(path, vocab)
    corpus = TextCorpus.from_file(path, vocab, empty_lines="skip", max_length=3)
    assert [vocab.decode(corpus.sentence(i)) for i in range(2)] == [["a", "b"], ["c", "a", "b"]]
    assert len(TextCorpus.from_file(path, vocab, empty_lines="skip", max_length=3, long_lines="drop")) == 1
    with pytest.raises(DataFormatError, match="line 3: 5 tokens > max_length 3"):
        TextCorpus.from_file(path, vocab, empty_lines="skip", max_length=3, long_lines="error")
    with pytest.raises(DataFormatError, match="not found"):
        TextCorpus.from_file(tmp_path / "none.txt", vocab)


def test_batch_layout_and_mask():
    batch = TextBatch.from_ids([[5, 6, 7], [8]])
    assert batch.tokens.tolist() == [[BOS, 5, 6, 7, EOS], [BOS, 8, EOS, PAD, PAD]]
    assert batch.lengths.tolist() == [4, 2]
    assert batch.mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert torch.equal(batch.decoder_inputs, batch.tokens[:, :-1])
    assert batch.targets[1, :2].tolist() == [8, EOS]


def test_bucketed_batches_cover_the_corpus_with_similar_lengths():
    splits, _ = synthetic_sentence_corpus(
        num_train=300, num_valid=10, num_test=10, vocab_size=50, max_length=30
    )
    train = splits["train"]
    batches = list(train.batches(16, shuffle=True, seed=1, pool=5))
    assert len(batches) == train.num_batches(16)
    assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(300))
    spread = torch.tensor([float(b.lengths.max() - b.lengths.min()) for b in batches]).mean()
    shuffled = [train.batch(torch.randperm(300)[:16]) for _ in range(20)]
    assert spread < torch.tensor([float(b.lengths.max() - b.lengths.min()) for b in shuffled]).mean()


def test_oracle_corpus_is_reproducible_from_its_seed():
    a, _ = synthetic_sentence_corpus(seed=3, num_train=40, num_valid=5, num_test=5, vocab_size=60)
    b, _ = synthetic_sentence_corpus(seed=3, num_train=40, num_valid=5, num_test=5, vocab_size=60)
    c, _ = synthetic_sentence_corpus(seed=4, num_train=40, num_valid=5, num_test=5, vocab_size=60)
    assert torch.equal(a["train"].ids, b["train"].ids) and torch.equal(a["test"].lengths, b["test"].lengths)
    assert not torch.equal(a["train"].ids, c["train"].ids)
    assert int(a["train"].lengths.max()) <= 10


@pytest.mark.integration
def test_ptb_and_yahoo_load_with_the_documented_counts(shared_data):
    ptb = load_dataset("ptb", shared_data)
    assert [len(ptb[s]) for s in ("train", "valid", "test")] == [42068, 3370, 3761]
    # tokens plus one <eos> per sentence
    assert ptb["train"].num_tokens == 887521 + 42068 and ptb["test"].num_tokens == 78669 + 3761
    assert int((ptb["test"].ids == UNK).sum()) == 4794
    yahoo = load_dataset("yahoo", shared_data)
    assert sorted(yahoo) == ["test", "valid"] and len(yahoo["test"]) == 10000
    assert len(yahoo["test"].vocab) == 20000 and int((yahoo["test"].ids == UNK).sum()) == 33081
