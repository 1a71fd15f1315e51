"""Every example runs with tiny settings; an example missing here fails the coverage test."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_ARGS = {
    "nvdm_two_ways.py": ["--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--iw-samples", "5"],
    "sentence_vae.py": ["--epochs", "1", "--latent-dim", "2", "--hidden-dim", "16", "--iw-samples", "3"],
}


CHECKS = {
    # the IW bound is at least as tight as the ELBO (5% slack for 5-sample noise)
    "nvdm_two_ways.py": lambda r: all(x["iw_perplexity"] <= x["elbo_perplexity"] * 1.05 for x in r.values()),
    # the model that generated the corpus explains it better than one epoch of a tiny VAE
    "sentence_vae.py": lambda r: r["oracle"]["nll"] < r["LSTM-VAE"]["nll"],
}


def load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(TINY_ARGS)


@pytest.mark.parametrize("name", sorted(TINY_ARGS))
def test_example_runs(name, capsys):
    results = load(name).main(TINY_ARGS[name])
    assert "|---|" in capsys.readouterr().out
    assert CHECKS[name](results)
