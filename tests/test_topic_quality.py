"""Topic quality: NPMI coherence and topic diversity against hand-computed values, and through
``fabula topics`` and a run's per-epoch metrics."""

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from fabula.cli import main
from fabula.data import BagOfWords, Vocab
from fabula.evaluation import npmi, topic_diversity, topic_quality

WORDS = ["the", "apple", "banana", "cherry", "date", "elder"]
THE, APPLE, BANANA, CHERRY, DATE, ELDER = range(len(WORDS))
DOCUMENTS = [  # word ids of each of the five documents, with made-up counts
    [THE, APPLE, BANANA],
    [THE, APPLE, BANANA, CHERRY],
    [THE, APPLE, CHERRY],
    [THE, CHERRY, DATE, ELDER],
    [THE, DATE, ELDER],
]
FIXTURES = Path(__file__).with_name("fixtures") / "saved_runs"


def corpus(documents=DOCUMENTS, words=WORDS) -> BagOfWords:
    counts = torch.zeros(len(documents), len(words))
    for d, ids in enumerate(documents):
        counts[d, ids] = torch.arange(1.0, len(ids) + 1)  # counts > 1 still count a document once
    return BagOfWords.from_dense(counts, Vocab(words))


def test_npmi_matches_the_hand_computed_document_co_occurrence():
    # P(apple) = 3/5, P(banana) = 2/5, P(cherry) = 3/5; together: apple-banana 2/5 (d0, d1),
    # apple-cherry 2/5 (d1, d2), banana-cherry 1/5 (d1)
    apple_banana = math.log((2 / 5) / (3 / 5 * 2 / 5)) / -math.log(2 / 5)  # log(5/3) / log(5/2)
    apple_cherry = math.log((2 / 5) / (3 / 5 * 3 / 5)) / -math.log(2 / 5)
    banana_cherry = math.log((1 / 5) / (2 / 5 * 3 / 5)) / -math.log(1 / 5)
    scores = npmi(torch.tensor([[APPLE, BANANA, CHERRY]]), corpus(), top=3)
    assert scores.shape == (1,)
    assert float(scores[0]) == pytest.approx((apple_banana + apple_cherry + banana_cherry) / 3, rel=1e-12)
    # only the first `top` words of a row count
    assert float(npmi(torch.tensor([[APPLE, BANANA, CHERRY]]), corpus(), top=2)[0]) == pytest.approx(
        apple_banana, rel=1e-12
    )


def test_npmi_conventions_never_together_always_together_and_independent():
    data = corpus()
    # date and elder share both their documents: log(1/P) / -log P = 1 at P = 2/5
    # apple never meets date nor elder: -1 each
    # `the` is in every document: P(the, w) = P(w), so log 1 = 0 for any w
    pairs = torch.tensor([[DATE, ELDER], [APPLE, DATE], [ELDER, APPLE], [THE, BANANA]])
    assert npmi(pairs, data, top=2).tolist() == pytest.approx([1.0, -1.0, -1.0, 0.0], abs=1e-12)
    topic = npmi(torch.tensor([[DATE, ELDER, APPLE]]), data, top=3)  # pairs: 1, -1, -1
    assert float(topic[0]) == pytest.approx(-1 / 3, rel=1e-12)
    # two words in every document: P(wi, wj) = 1, where the ratio is 0/0, scores 1
    everywhere = corpus([[0, 1], [0, 1, 2], [0, 1]], ["x", "y", "z"])
    assert npmi(torch.tensor([[0, 1]]), everywhere, top=2).tolist() == [1.0]


def test_npmi_equals_a_pair_by_pair_count_in_any_chunking(monkeypatch):
    g = torch.Generator().manual_seed(0)
    V, N = 30, 41
    counts = (torch.rand(N, V, generator=g) < 0.2).float() * torch.randint(1, 4, (N, V), generator=g)
    counts[:, 0] += 1  # no empty document
    data = BagOfWords.from_dense(counts, Vocab([f"w{i}" for i in range(V)]))
    topics = torch.stack([torch.randperm(V, generator=g)[:6] for _ in range(5)])
    has = counts > 0

    def pair(i: int, j: int) -> float:
        joint, pi, pj = (
            (has[:, i] & has[:, j]).double().mean(),
            has[:, i].double().mean(),
            has[:, j].double().mean(),
        )
        return -1.0 if joint == 0 else float((joint / (pi * pj)).log() / -joint.log())

    expected = [sum(pair(i, j) for i, j in itertools.combinations(row.tolist(), 2)) / 15 for row in topics]
    assert npmi(topics, data, top=6).tolist() == pytest.approx(expected, rel=1e-10)
    monkeypatch.setattr(topic_quality, "_CHUNK", 4)  # chunk boundaries inside the corpus
    assert npmi(topics, data, top=6).tolist() == pytest.approx(expected, rel=1e-10)


def test_npmi_and_diversity_refuse_too_few_words():
    with pytest.raises(ValueError, match="3 or more word ids"):
        npmi(torch.tensor([[APPLE, BANANA]]), corpus(), top=3)
    with pytest.raises(ValueError, match="2 or more"):
        npmi(torch.tensor([[APPLE, BANANA]]), corpus(), top=1)
    with pytest.raises(ValueError, match="vocabulary of 6"):
        npmi(torch.tensor([[APPLE, 6]]), corpus(), top=2)
    with pytest.raises(ValueError, match="25 or more"):
        topic_diversity(torch.tensor([[0, 1, 2]]))


def test_topic_diversity_is_the_share_of_unique_top_words():
    assert topic_diversity([[0, 1, 2], [3, 4, 5]], top=3) == 1.0
    assert topic_diversity([[0, 1, 2], [2, 3, 4]], top=3) == 5 / 6
    assert topic_diversity([[0, 1, 9], [1, 0, 8]], top=2) == 2 / 4  # only the top 2 count
    assert topic_diversity(torch.arange(50).reshape(2, 25)) == 1.0  # top 25 by default


def test_topics_command_reports_npmi_and_diversity_and_the_run_records_them(tmp_path, capsys):
    run = str(tmp_path / "run")
    tiny = ["--epochs", "1", "--latent-dim", "4", "--hidden", "16", "--quiet", "--no-reference"]
    assert main(["train", "nvdm", "--out", run, *tiny]) == 0
    (metrics,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert -1 <= metrics["eval_npmi"] <= 1 and 0 < metrics["eval_topic_diversity"] <= 1
    assert len((tmp_path / "run" / "topics.txt").read_text().splitlines()) == 4
    capsys.readouterr()

    assert main(["topics", run, "--k", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["npmi"]) == 4 and all(math.isfinite(s) and -1 <= s <= 1 for s in report["npmi"])
    assert report["npmi_mean"] == pytest.approx(sum(report["npmi"]) / 4)
    assert 0 < report["diversity"] <= 1 and report["reference"] == "train"
    assert (report["npmi_top"], report["diversity_top"]) == (10, 25)
    assert [len(t) for t in report["topics"]] == [3] * 4

    assert main(["topics", run, "--k", "3", "--reference", "test"]) == 0
    *rows, summary = capsys.readouterr().out.strip().splitlines()
    assert [r.split("\t")[2].split()[0] for r in rows] == ["NPMI"] * 4
    assert summary.startswith("mean NPMI") and "test split" in summary and "topic diversity" in summary
    assert main(["topics", run, "--reference", "nowhere"]) == 2
    assert "no split 'nowhere'" in capsys.readouterr().err


def test_topics_refuses_a_story_without_topics_in_one_line(capsys):
    assert main(["topics", str(FIXTURES / "lstm-vae-v1")]) == 2
    err = capsys.readouterr().err
    assert "the lstm-vae story has no topics" in err and len(err.strip().splitlines()) == 1
