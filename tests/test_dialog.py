import pytest

from fabula.data import DataFormatError
from fabula.data.dialog import DataWarning, load_dailydialog, read_dailydialog


def write_split(folder, texts, acts, emotions):
    folder.mkdir()
    (folder / "dialogues.txt").write_text("".join(t + "\n" for t in texts))
    (folder / "dialogues_act.txt").write_text("".join(a + "\n" for a in acts))
    (folder / "dialogues_emotion.txt").write_text("".join(e + "\n" for e in emotions))
    return folder


def test_a_label_count_mismatch_is_left_out_with_a_warning_naming_the_line(tmp_path):
    folder = write_split(
        tmp_path / "train",
        ["Hi there ! __eou__ Hello . __eou__ ", "One __eou__ Two __eou__ Three __eou__ ", "Bye . __eou__ "],
        ["2 1 ", "1 1 ", "4 "],
        ["0 4 ", "0 0 ", "5 "],
    )
    with pytest.warns(DataWarning, match=r"dialogues.txt, line 2: 3 utterances but 2 act and 2 emotion"):
        dialogues, vocab = read_dailydialog(folder)
    assert len(dialogues.utterances) == 3
    assert dialogues.acts.tolist() == [2, 1, 4] and dialogues.emotions.tolist() == [0, 4, 5]
    assert dialogues.dialogue.tolist() == [0, 0, 2] and dialogues.turn.tolist() == [0, 1, 0]
    assert vocab.decode(dialogues.utterances.sentence(0)) == ["hi", "there", "!"]
    with pytest.warns(DataWarning):
        small, vocab = read_dailydialog(folder, max_vocab=len(vocab) - 2)
    # "." is the most frequent word, ties go alphabetically: "hi" and "there" are cut
    assert vocab.decode(small.utterances.sentence(0)) == ["<unk>", "<unk>", "!"]
    assert vocab.decode(small.utterances.sentence(1)) == ["hello", "."]


def test_malformed_labels_and_missing_files(tmp_path):
    folder = write_split(tmp_path / "a", ["x __eou__ "], ["one "], ["0 "])
    with pytest.raises(
        DataFormatError, match="dialogues_act.txt, line 1: act 'one' in 'one' is not an integer"
    ):
        read_dailydialog(folder)
    with pytest.raises(DataFormatError, match="not found"):
        read_dailydialog(tmp_path / "none")


@pytest.mark.parametrize(
    "file, labels, line, problem",
    [
        ("dialogues_act.txt", ["1 2", "9 -3"], 2, "act 9 in '9 -3' out of range 1..4 (1 inform, 2 question"),
        ("dialogues_act.txt", ["1 2", "1 0"], 2, "act 0 in '1 0' out of range 1..4"),
        (
            "dialogues_emotion.txt",
            ["42 7", "0 0"],
            1,
            "emotion 42 in '42 7' out of range 0..6 (0 none, 1 anger",
        ),
        (
            "dialogues_emotion.txt",
            ["0 0", f"0 {2**63}"],
            2,
            f"emotion {2**63} in '0 {2**63}' out of range 0..6",
        ),
        ("dialogues_act.txt", ["1 \u0663", "1 1"], 1, "act '\u0663' in '1 \u0663' is not an integer"),
        ("dialogues_emotion.txt", ["0 0"], None, "1 lines but dialogues.txt has 2 dialogues"),
    ],
)
def test_labels_outside_the_documented_codes_are_refused(tmp_path, file, labels, line, problem):
    lines = {"dialogues_act.txt": ["1 2", "3 4"], "dialogues_emotion.txt": ["0 0", "6 5"], file: labels}
    folder = write_split(tmp_path / "s", ["a __eou__ b __eou__", "c __eou__ d __eou__"], *lines.values())
    with pytest.raises(DataFormatError) as err:
        read_dailydialog(folder)
    assert (err.value.path, err.value.line) == (str(folder / file), line)
    assert problem in err.value.problem


def test_an_empty_split_and_bytes_that_are_not_utf8_are_refused(tmp_path):
    folder = write_split(tmp_path / "empty", [], [], [])
    with pytest.raises(DataFormatError, match=r"dialogues.txt: no dialogues \(the split is empty\)"):
        read_dailydialog(folder)
    folder = write_split(tmp_path / "mismatched", ["a __eou__ "], ["1 1"], ["0 0"])
    with pytest.warns(DataWarning), pytest.raises(DataFormatError, match="no utterances: each of the 1"):
        read_dailydialog(folder)
    folder = write_split(tmp_path / "bytes", ["a __eou__ ", "b __eou__ "], ["1", "1"], ["0", "0"])
    (folder / "dialogues.txt").write_bytes(b"a __eou__ \nb\xed\xa0\x80 __eou__ \n")  # a UTF-16 surrogate
    with pytest.raises(DataFormatError, match="dialogues.txt, line 2: invalid UTF-8"):
        read_dailydialog(folder)


def test_only_the_exact_end_of_utterance_marker_splits_and_reserved_tokens_are_refused(tmp_path):
    folder = write_split(tmp_path / "s", ["A __EOU__ b __eou__ "], ["1"], ["0"])
    dialogues, vocab = read_dailydialog(folder)
    assert vocab.decode(dialogues.utterances.sentence(0)) == ["a", "__eou__", "b"]
    folder = write_split(
        tmp_path / "r", ["a __eou__ ", "b __eou__ <BOS> __eou__ "], ["1", "1 2"], ["0", "0 0"]
    )
    with pytest.raises(DataFormatError, match="dialogues.txt, line 2: token '<bos>' is reserved"):
        read_dailydialog(folder)  # lowercased: <BOS> is <bos>


@pytest.mark.integration
def test_dailydialog_splits_and_the_known_mismatch(shared_data):
    with pytest.warns(DataWarning, match="line 7852: 12 utterances but 11 act"):
        splits = load_dailydialog(shared_data)
    # README: 87,171 train utterances (87,170 labels); the 12 of line 7,852 are left out
    assert len(splits["train"].utterances) == 87171 - 12
    assert [len(splits[s].utterances) for s in ("valid", "test")] == [8069, 7740]
    assert set(splits["test"].acts.tolist()) == {1, 2, 3, 4}
    assert splits["valid"].utterances.vocab is splits["train"].utterances.vocab
    assert len(splits["train"].utterances.vocab) == 10_000  # Shi et al.'s vocabulary size
