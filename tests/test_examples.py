"""Every example runs with tiny settings; an example missing here fails the coverage test."""

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.thorough  # each example run end to end

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_ARGS = {
    "nvdm_two_ways.py": ["--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--iw-samples", "5"],
    "sentence_vae.py": ["--epochs", "1", "--latent-dim", "2", "--hidden-dim", "16", "--iw-samples", "3"],
    "posterior_predictive.py": "--epochs 1 --latent-dim 3 --hidden 16 --docs 20 --draws 5".split(),
    "own_story.py": (
        "--train-docs 100 --test-docs 20 --epochs 1 --topics 3 --hidden 16 --steps 1 --iw-samples 5 "
        "--nuts-docs 2 --nuts-draws 30 --replicas 5"
    ).split(),
}


CHECKS = {
    # the IW bound is at least as tight as the ELBO (5% slack for 5-sample noise)
    "nvdm_two_ways.py": lambda r: all(x["iw_perplexity"] <= x["elbo_perplexity"] * 1.05 for x in r.values()),
    # the model that generated the corpus explains it better than one epoch of a tiny VAE
    "sentence_vae.py": lambda r: r["oracle"]["nll"] < r["LSTM-VAE"]["nll"],
    # replicas keep the documents' lengths (given to the story), and the figure is written
    "posterior_predictive.py": lambda r: (
        r["length"]["real"] == r["length"]["predicted"] and Path(r["plot"]).is_file()
    ),
    # every inference object fits and is scored, the IW bound no looser than the ELBO (5-sample
    # slack); NUTS's draws give a finite estimate; both posteriors reach ArviZ's LOO
    "own_story.py": lambda r: (
        len(r["rows"]) == 7
        and all(x["iw_perplexity"] <= x["elbo_perplexity"] * 1.05 for x in r["rows"].values())
        and math.isfinite(r["nuts"]["perplexity"])
        and all(math.isfinite(v) for v in r["loo"].values())
        and 0 <= r["ppc"]["p"] <= 1
    ),
}


def load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY_ARGS)


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_example_runs(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what an example writes lands here
    results = load(name).main(TINY_ARGS[name])
    assert "|---|" in capsys.readouterr().out
    assert CHECKS[name](results)
    assert {p.name for p in tmp_path.iterdir()} <= {"runs"}  # nothing in the folder it runs from
