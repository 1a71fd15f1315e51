"""What a new user meets first: the command's refusals and help, the README's guide, the
exports it names, and ``MCMC.posterior`` with fewer draws than it pooled."""

import importlib.util
import math
import re
from pathlib import Path

import pyro
import pyro.infer
import pytest
import torch
from pyro import poutine

import fabula.data
import fabula.data.text
import fabula.inference
from fabula.cli import _train_config, main, parser
from fabula.errors import SettingsError
from fabula.inference import MCMC, Setup, Training, build
from fabula.inference.annealing import Constant, Linear, Logistic, unfinished_warmup
from fabula.inference.kernels import Chains, Kernel
from fabula.models import LSTMVAE, LinearGaussian
from fabula.run import TrainConfig
from fabula.run.compare import flags
from fabula.run.config import recipe_defaults

README = Path(__file__).resolve().parents[1] / "README.md"


def refused(argv, capsys) -> str:
    """The one line ``fabula ARGV`` is refused with (exit 2)."""
    try:
        code = main(argv)
    except SystemExit as e:  # refused while parsing
        code = e.code
    assert code == 2, argv
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def config(*argv) -> TrainConfig:
    return _train_config(parser().parse_args(["train", *argv]))


def test_a_recipes_kl_remedies_are_left_out_for_a_kind_without_a_kl():
    vae = config("lstm-vae").inference
    assert (vae.anneal, vae.free_bits) == ("linear:8000", 0.2)  # the recipe's remedies
    for kind in ("rws", "rws:3"):
        rws = config("lstm-vae", "--inference", kind).inference
        assert (rws.anneal, rws.free_bits) == (None, None)
        assert TrainConfig.create("lstm-vae", inference=kind).inference.free_bits is None
    assert "free_bits" not in recipe_defaults("lstm-vae", "rws")["inference"]
    assert recipe_defaults("lstm-vae")["inference"]["free_bits"] == 0.2
    assert config("lstm-vae", "--inference", "rws").optimizer.clip_norm == 5.0  # other defaults stay


def test_a_remedy_given_to_a_kind_without_a_kl_is_refused(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    # the recipe's own value, given: refused all the same
    line = refused(["train", "lstm-vae", "--inference", "rws", "--free-bits", "0.2", *out], capsys)
    assert "--free-bits" in line and "rws brings its own loss" in line
    line = refused(["train", "lstm-vae", "--inference", "rws", "--anneal", "linear:8000", *out], capsys)
    assert "--anneal" in line and "rws brings its own loss" in line
    with pytest.raises(SettingsError, match="--anneal"):
        TrainConfig.create("lstm-vae", inference="rws", anneal="linear:10")


def test_a_kind_that_cannot_train_the_story_says_so_first(tmp_path, capsys):
    out = ["--out", str(tmp_path / "run")]
    line = refused(["train", "lstm-vae", "--inference", "cd:1", *out], capsys)
    assert line.startswith("fabula train: error: cd trains undirected stories")
    assert "LSTMVAE is not one" in line and "rws:K" in line and "annealing" not in line
    line = refused(["train", "lstm-vae", "--inference", "wake-sleep", "--free-bits", "0.1", *out], capsys)
    assert "wake-sleep needs a story with the Dreams capability" in line and "free-bits" not in line
    line = refused(["train", "lstm-vae", "--inference", "nvil", *out], capsys)
    assert "nvil trains stories of documents, and LSTMVAE reads sentences" in line
    # from Python too: the story's kind before the settings that CD has no use for
    story = LSTMVAE(12, latent_dim=2, embed_dim=4, hidden_dim=4)
    with pytest.raises(SettingsError, match="LSTMVAE is not one"):
        build("cd:1", Setup(story, None, training=Training(annealing=Linear(10))))


def kinds_listed(story: str, capsys) -> tuple[set[str], str]:
    """The kinds ``fabula train STORY --help`` describes, and its line naming the others."""
    with pytest.raises(SystemExit):
        main(["train", story, "--help"])
    text = capsys.readouterr().out
    listed = set(re.findall(r"^  ([a-z+-]+): ", text, re.M))
    (others,) = re.findall(r"^  kinds that cannot train .*$", text, re.M)
    return listed, others


def test_a_storys_help_lists_the_kinds_that_train_it(capsys):
    listed, others = kinds_listed("lstm-vae", capsys)
    assert {"vae", "svi", "sa-vae", "rws"} <= listed
    assert not {"cd", "pcd", "wake-sleep", "nvil", "nuts"} & listed
    assert others.endswith("lstm-vae story: wake-sleep, nvil, cd, pcd, collapsed-gibbs, vb")
    listed, others = kinds_listed("lda", capsys)
    assert {"vae", "collapsed-gibbs", "vb"} <= listed and "cd" not in listed
    listed, others = kinds_listed("rsm", capsys)
    assert listed == {"cd", "pcd"} and "vae" in others
    listed, _ = kinds_listed("sbn", capsys)
    assert {"wake-sleep", "rws", "nvil", "vae"} <= listed and "cd" not in listed


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    run = str(tmp_path / "run")
    line = refused(["diagnose", run, "--items", "5:2", "--out", "x"], capsys)
    assert line == "fabula diagnose: error: argument --items: expected 0 <= START < STOP, got '5:2'"
    line = refused(["sample", run, "--n", "0"], capsys)
    assert line == "fabula sample: error: argument --n: must be an integer >= 1, got 0"
    assert "required: run" in refused(["sample"], capsys)
    assert "--epochs" in refused(["train", "nvdm", "--epochs", "lots", "--out", run], capsys)
    with pytest.raises(SystemExit):  # --help still shows the usage
        main(["sample", "--help"])
    assert capsys.readouterr().out.startswith("usage: fabula sample")


def test_a_refused_train_leaves_no_directory(tmp_path, capsys):
    new = tmp_path / "new" / "run"
    # refused by its settings (before training), and by the data once loaded (the synthetic
    # corpus has no validation split for aggressive training)
    for kind in ("cd:1", "aggressive"):
        line = refused(["train", "nvdm", "--inference", kind, "--out", str(new), "--epochs", "1"], capsys)
        assert kind.split(":")[0] in line
        assert not (tmp_path / "new").exists(), kind
    there = tmp_path / "there"
    there.mkdir()
    (there / "notes.txt").write_text("mine")
    refused(["train", "nvdm", "--inference", "aggressive", "--out", str(there), "--epochs", "1"], capsys)
    assert [p.name for p in there.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(["train", "nvdm", "--inference", "aggressive", "--out", str(empty), "--epochs", "1"], capsys)
    assert empty.is_dir() and not list(empty.iterdir())


class Numbered(Kernel):
    """Draw ``d`` of chain ``c`` is ``1000 c + d`` for every datum: which draws came back is readable."""

    def run(self, story, batch, init, *, num_samples, warmup, num_chains, seed, progress):
        draws = 1000 * torch.arange(num_chains)[:, None] + torch.arange(num_samples)
        z = draws[:, :, None, None].expand(num_chains, num_samples, batch.x.shape[0], 1).float()
        return Chains({"z": z}, {})


def test_mcmc_posterior_thins_its_pooled_draws_evenly():
    story = LinearGaussian(data_dim=2, latent_dim=1)
    batch = fabula.data.Vectors(torch.zeros(3, 2)).batch(torch.arange(3))
    mcmc = MCMC(story, kernel=Numbered(), num_samples=200, num_chains=2, progress=False)
    assert mcmc.posterior(batch)["z"].shape == (400, 3, 1)
    assert mcmc.posterior(batch, 400)["z"].shape == (400, 3, 1)
    thinned = mcmc.posterior(batch, 200)["z"][:, 0, 0].long()
    assert thinned.tolist() == [*range(1, 200, 2), *range(1001, 1200, 2)]  # every other, both chains
    assert mcmc.posterior(batch, 4)["z"][:, 0, 0].long().tolist() == [99, 199, 1099, 1199]
    for too_many in (401, 0):
        with pytest.raises(SettingsError, match="this sampler draws 400 samples"):
            mcmc.posterior(batch, too_many)


def test_the_names_the_readme_uses_are_exported():
    assert fabula.data.TextCorpus is fabula.data.text.TextCorpus
    assert fabula.data.TextVocab is fabula.data.text.TextVocab
    assert fabula.inference.TraceEnum_ELBO is pyro.infer.TraceEnum_ELBO
    assert {"TextCorpus", "TextVocab"} <= set(fabula.data.__all__)
    assert "TraceEnum_ELBO" in fabula.inference.__all__


def readme_blocks(after: str, count: int) -> list[str]:
    """The ``count`` Python blocks of the README that follow the heading ``after``."""
    section = README.read_text().split(after, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[:count]


def test_the_readmes_guide_fits_a_mixture_of_unigrams_with_its_component_summed_out():
    guide_code, fit_code = readme_blocks("### Write a guide", 2)
    assert "class TopicGuide(Guide)" in guide_code and "TraceEnum_ELBO" in fit_code
    namespace = {}
    exec(compile(guide_code, str(README), "exec"), namespace)
    exec(compile(fit_code, str(README), "exec"), namespace)
    history, vi, data = namespace["history"], namespace["vi"], namespace["data"]
    assert len(history) == 5 and history[-1]["loss"] < history[0]["loss"]
    c = namespace["c"]
    assert c.shape == (100, 10) and 0 <= int(c.min()) and int(c.max()) < 5
    # the guide's site is enumerated: TraceEnum_ELBO sums it out rather than sampling it
    batch = data["test"].batch(torch.arange(4))
    enumerated = poutine.trace(poutine.enum(vi.guide, first_available_dim=-2)).get_trace(batch)
    assert enumerated.nodes["c"]["value"].shape == (5, 1)


def test_a_kl_warm_up_that_outlasts_the_training_is_named(tmp_path, capsys):
    """Training that ends before its warm-up reaches β = 1 never fits the ELBO it is evaluated
    on: `fabula train` says so, and the comparison table flags it."""
    assert unfinished_warmup(Linear(2000), 1000) == 0.5 and unfinished_warmup(Linear(2000), 2000) is None
    assert unfinished_warmup(Logistic(0.01, 500), 100) == pytest.approx(1 / (1 + math.exp(4)))
    assert unfinished_warmup(Constant(0.5), 10) is None  # a chosen weight, not a warm-up
    tiny = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-reference", "--quiet"]
    for anneal, noted in (("linear:100000", True), ("linear:5", False)):
        assert main(["train", "nvdm", "--out", str(tmp_path / anneal), "--anneal", anneal, *tiny]) == 0
        out = capsys.readouterr().out
        assert ("note: --anneal linear:100000 outlasts the training's" in out) == noted, out
    assert flags({"kl": 3.0, "nll": 60.0, "unfinished_warmup": 0.5})[0].startswith(
        "KL annealing unfinished (β = 0.50 at the last step)"
    )


def test_the_readme_states_the_measured_time_of_each_timed_command(monkeypatch):
    """`benchmarks/readme_commands.py` times the README's compare and diagnose commands against
    the minutes it states for each: the README carries each command verbatim with that time."""
    benchmarks = README.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))
    spec = importlib.util.spec_from_file_location("readme_commands", benchmarks / "readme_commands.py")
    timed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timed)
    lines = README.read_text().splitlines()
    for command, minutes in timed.STATED_MINUTES.items():
        found = [line for line in lines if line == command or line.startswith(command + " ")]
        assert found, f"the README lacks {command!r}"
        assert f"about {minutes} min" in found[0], found[0]
