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
    with pytest.raises(DataFormatError, match="dialogues_act.txt, line 1: labels 'one'"):
        read_dailydialog(folder)
    with pytest.raises(DataFormatError, match="not found"):
        read_dailydialog(tmp_path / "none")


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
