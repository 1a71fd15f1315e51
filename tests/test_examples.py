"""Every example runs with tiny settings; an example missing here fails the coverage test."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_ARGS = {
    "nvdm_two_ways.py": ["--epochs", "2", "--latent-dim", "3", "--hidden", "16", "--iw-samples", "5"],
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
    assert "| inference |" in capsys.readouterr().out
    assert all(r["iw_perplexity"] <= r["elbo_perplexity"] * 1.05 for r in results.values())
