"""A researcher's own corpus and own story through every command: folders of plain text written
here, the tutorial story as a ``module:Class`` path, an entry point, and the one-line refusals."""

import json
import random
from pathlib import Path

import pytest

from fabula.cli import main
from fabula.run import load_run
from fabula.rundir import RunDirectory

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WORDS = "the market fell as stocks rose and bonds sold while traders said prices would drop again".split()


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def sentences(tmp_path) -> Path:
    """train.txt and test.txt of short sentences (no validation file: one is held out)."""
    rng = random.Random(0)
    folder = tmp_path / "sentences"
    folder.mkdir()
    for split, n in (("train", 80), ("test", 12)):
        write_lines(
            folder / f"{split}.txt", [" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(n)]
        )
    return folder


@pytest.fixture
def documents(tmp_path) -> Path:
    """train.txt, valid.txt and test.txt of raw documents, one per line, from two word pools."""
    rng = random.Random(1)
    pools = [WORDS[:9], WORDS[8:]]
    folder = tmp_path / "documents"
    folder.mkdir()
    for split, n in (("train", 60), ("valid", 10), ("test", 10)):
        lines = [" ".join(rng.choices(pools[i % 2], k=rng.randint(10, 30))).upper() for i in range(n)]
        write_lines(folder / f"{split}.txt", lines)
    return folder


def run_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


SMALL_VAE = ["--latent-dim", "2", "--embed-dim", "8", "--hidden-dim", "8", "--epochs", "1", "--quiet"]
SMALL_NVDM = ["--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--quiet", "--batch-size", "20"]


def test_a_sentence_story_trains_evaluates_samples_and_compares_on_a_folder_of_text(
    sentences, tmp_path, capsys
):
    run = str(tmp_path / "vae")
    assert main(["train", "lstm-vae", "--data", str(sentences), "--out", run, *SMALL_VAE, "--lowercase"]) == 0
    printed = capsys.readouterr().out
    assert "the valid split is held out of the training lines (share 0.1 of train, seed 0)" in printed
    meta = RunDirectory(run).load().metadata
    assert meta["data"]["name"] == "files" and meta["data"]["path"] == str(sentences.resolve())
    assert meta["vocab"]["words"][:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert set(meta["vocab"]["words"][4:]) == set(WORDS)
    loaded = load_run(run)
    assert [len(loaded.splits[s]) for s in ("train", "valid", "test")] == [72, 8, 12]

    report = run_json(capsys, "evaluate", run, "--estimator", "iw:3")
    assert report["num_data"] == 12 and report["nll"] > 0 and report["estimator"] == "iw"
    assert main(["sample", run, "--n", "2", "--max-length", "6"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["sample", run, "--n", "1", "--from", "the market fell"]) == 0
    assert capsys.readouterr().out.startswith("input:  the market fell")

    rows = run_json(
        capsys,
        "compare",
        "--data",
        str(sentences),
        "--inference",
        "vae",
        "svi:steps=2,lr=0.01",
        "--epochs",
        "1",
        "--train-size",
        "40",
        "--test-size",
        "6",
        "--samples",
        "3",
        "--hidden-dim",
        "8",
    )["rows"]
    assert set(rows) == {"vae", "svi:steps=2,lr=0.01"}
    assert all(r["nll"] > 0 and r["estimator"] == "iw:3" for r in rows.values())


def test_a_document_story_reads_raw_text_as_bags_of_words(documents, tmp_path, capsys):
    run = str(tmp_path / "nvdm")
    assert main(["train", "nvdm", "--data", str(documents), "--out", run, *SMALL_NVDM, "--lowercase"]) == 0
    loaded = load_run(run)
    assert set(loaded.splits["train"].vocab.words) == set(WORDS)  # lower-cased, every word of train
    assert [len(loaded.splits[s]) for s in ("train", "valid", "test")] == [60, 10, 10]
    report = run_json(capsys, "evaluate", run, "--estimator", "elbo")
    assert report["num_data"] == 10 and report["perplexity"] > 1
    assert main(["topics", run, "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # 2 topics and their NPMI, diversity
    assert main(["sample", run, "--n", "2", "--max-length", "4"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_the_tutorial_story_reaches_train_evaluate_compare_and_diagnose(
    documents, tmp_path, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    story, run = "own_story:TopicMixture", str(tmp_path / "topics")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", story, "--help"])
    assert "--num-topics NUM_TOPICS" in capsys.readouterr().out

    assert (
        main(["train", story, "--data", str(documents), "--num-topics", "3", "--out", run, *SMALL_NVDM[4:]])
        == 0
    )
    loaded = load_run(run)
    assert (
        type(loaded.inference.story).__name__ == "TopicMixture"
        and loaded.inference.story.topic_logits.shape[0] == 3
    )
    assert type(loaded.inference.guide).__name__ == "SupportGuide"
    report = run_json(capsys, "evaluate", run, "--estimator", "iw:4")
    assert report["num_data"] == 10 and report["nll"] > 0

    rows = run_json(
        capsys,
        "compare",
        "--story",
        story,
        "--num-topics",
        "2",
        "--data",
        str(documents),
        "--inference",
        "vae",
        "svi:steps=5",
        "--epochs",
        "1",
        "--samples",
        "3",
        "--test-size",
        "5",
    )["rows"]
    assert set(rows) == {"vae", "svi:steps=5"} and all(r["kl"] >= 0 for r in rows.values())

    assert (
        main(["topics", run, "--k", "2"]) == 0
    )  # the story has topics (HasTopics), so the command serves it
    lines = capsys.readouterr().out.strip().splitlines()  # 3 topics and their NPMI, diversity
    assert len(lines) == 4 and (Path(run) / "topics.txt").is_file()

    out = tmp_path / "diag"
    args = ["diagnose", run, "--inference", "vae", "--items", "0:2", "--samples", "20", "--out", str(out)]
    assert main(args) == 0
    assert (out / "posterior.nc").stat().st_size > 0 and "PSIS k-hat" in capsys.readouterr().out

    assert main(["sample", run, "--n", "1"]) == 2
    assert "does not generate sentences" in capsys.readouterr().err


def test_a_story_of_an_installed_package_is_found_by_its_entry_point(
    documents, tmp_path, capsys, monkeypatch
):
    import importlib.metadata

    monkeypatch.syspath_prepend(str(EXAMPLES))
    point = importlib.metadata.EntryPoint("topics", "own_story:TopicMixture", "fabula.stories")
    real = importlib.metadata.entry_points
    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group=None: [point] if group == "fabula.stories" else real(group=group),
    )
    run = str(tmp_path / "ep")
    assert main(["train", "topics", "--data", str(documents), "--out", run, *SMALL_NVDM[4:]]) == 0
    assert load_run(run).config.story == "topics"


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "nvdm", "--data", "no/such/folder"], "is neither a registered dataset"),
        (["train", "nvdm", "--lowercase"], "the tokenization flags apply to your own files"),
        (["train", "no_such_module:Story"], "cannot import 'no_such_module'"),
        (["train", "json:JSONDecoder"], "is not a fabula.models.Story subclass"),
        (["train", "own_story:Nothing"], "has no class 'Nothing'"),
        (["compare", "--story", "rnnlm"], "the rnnlm story has no latent"),
    ],
)
def test_what_cannot_be_a_story_or_corpus_is_refused_in_one_line(args, message, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bytes_that_are_not_utf8_are_refused_naming_the_file_and_line(documents, tmp_path, capsys):
    (documents / "train.txt").write_bytes(b"caf\xe9 au lait\n")
    assert main(["train", "lstm-vae", "--data", str(documents), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "train.txt" in err and "line 1" in err and "UTF-8" in err and err.count("\n") == 1


UNIGRAM_MIXTURE = '''
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch

from fabula.distributions import BagOfWordsMultinomial
from fabula.models import Story
from fabula.settings import COUNT, check_ranges, setting


@dataclass
class MixtureSettings:
    """A mixture of unigrams: each document's words from one of K word distributions"""

    components: int = setting(3, "mixture components K", within=COUNT)

    def __post_init__(self):
        check_ranges(self)


class UnigramMixture(Story):
    latent_sites = ("c",)
    reads = "documents"
    settings_class = MixtureSettings

    def __init__(self, vocab_size: int, components: int = 3):
        super().__init__()
        self.remember(locals())
        self.logits = torch.nn.Parameter(0.01 * torch.randn(components, vocab_size))
        self.register_buffer("weights", torch.ones(components) / components)

    def model(self, batch):
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(self.weights))
            words = self.logits.log_softmax(-1)[c]
            pyro.sample("x", BagOfWordsMultinomial(words, total_count=batch.lengths), obs=batch.counts)

    def num_tokens(self, batch):
        return batch.lengths
'''


def test_a_story_that_names_its_settings_dataclass_gets_its_help_and_ranges(
    documents, tmp_path, capsys, monkeypatch
):
    (tmp_path / "my_stories.py").write_text(UNIGRAM_MIXTURE)
    monkeypatch.syspath_prepend(str(tmp_path))
    story, run = "my_stories:UnigramMixture", str(tmp_path / "mixture")
    with pytest.raises(SystemExit):
        main(["train", story, "--help"])
    assert "mixture components K, >= 1 (default: 3)" in " ".join(capsys.readouterr().out.split())
    assert main(["train", story, "--data", str(documents), "--components", "0", "--out", run]) == 2
    assert "--components must be an integer >= 1, got 0" in capsys.readouterr().err

    assert (
        main(["train", story, "--data", str(documents), "--components", "2", "--out", run, *SMALL_NVDM[4:]])
        == 0
    )
    loaded = load_run(run)
    assert loaded.inference.story.logits.shape[0] == 2
    assert [s["family"] for s in loaded.inference.guide.config()["sites"]] == ["categorical"]
    assert type(loaded.inference.objective).__name__ == "TraceEnum_ELBO"  # c is summed out exactly
    report = run_json(capsys, "evaluate", run, "--estimator", "elbo")
    assert report["num_data"] == 10 and report["nll"] > 0


SENTENCE_TOPIC = '''
import pyro
import pyro.distributions as dist
import torch

from fabula.models import Story


class SentenceTopic(Story):
    """Sentences whose words are drawn one by one from softmax(z W + b), z ~ N(0, I).

    :param latent_dim: size of the code z.
    """

    latent_sites = ("z",)
    reads = "sentences"

    def __init__(self, vocab_size: int, latent_dim: int):
        super().__init__()
        self.remember(locals())
        self.weight = torch.nn.Parameter(0.1 * torch.randn(latent_dim, vocab_size))
        self.bias = torch.nn.Parameter(torch.zeros(vocab_size))
        self.register_buffer("zeros", torch.zeros(latent_dim))

    def model(self, batch):
        steps = batch.targets.shape[-1]
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(self.zeros, 1.0).to_event(1))
            logits = (z @ self.weight + self.bias).unsqueeze(-2)
            logits = logits.expand(*logits.shape[:-2], steps, logits.shape[-1])
            pyro.sample("x", dist.Categorical(logits=logits).mask(batch.mask).to_event(1), obs=batch.targets)

    def num_tokens(self, batch):
        return batch.mask.sum(-1)


class Clashing(SentenceTopic):
    def __init__(self, vocab_size: int, latent_dim: int = 2, epochs: int = 3):
        super().__init__(vocab_size, latent_dim)
'''


def test_a_users_sentence_story_takes_its_required_setting_and_a_clash_is_refused(
    sentences, tmp_path, capsys, monkeypatch
):
    (tmp_path / "sentence_stories.py").write_text(SENTENCE_TOPIC)
    monkeypatch.syspath_prepend(str(tmp_path))
    story, run = "sentence_stories:SentenceTopic", str(tmp_path / "topic")
    with pytest.raises(SystemExit) as exit_:
        main(["train", story, "--data", str(sentences), "--out", run])
    assert (
        exit_.value.code == 2
        and "the following arguments are required: --latent-dim" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["train", story, "--help"])
    assert "size of the code z (required)" in " ".join(capsys.readouterr().out.split())

    assert (
        main(["train", story, "--data", str(sentences), "--latent-dim", "2", "--out", run, *SMALL_NVDM[4:]])
        == 0
    )
    loaded = load_run(run)
    assert loaded.inference.guide.config()["inputs"] == "tokens"
    assert loaded.inference.guide.config()["input_dim"] == len(loaded.splits["train"].vocab)
    report = run_json(capsys, "evaluate", run, "--estimator", "iw:3")
    assert report["num_data"] == 12 and report["nll"] > 0
    rows = run_json(
        capsys,
        "compare",
        "--story",
        story,
        "--latent-dim",
        "3",
        "--data",
        str(sentences),
        "--inference",
        "vae",
        "--epochs",
        "1",
        "--samples",
        "3",
        "--test-size",
        "5",
    )["rows"]
    assert list(rows) == ["vae"] and rows["vae"]["nll"] > 0

    assert main(["train", "sentence_stories:Clashing", "--data", str(sentences)]) == 2
    assert "clashes with the command's own flags" in capsys.readouterr().err
