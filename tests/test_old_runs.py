"""Runs written before the run layer was split (fabula 0.1.0 at the commit that introduced these
fixtures: an NVDM by vae, an LSTM-VAE by sa-vae:2, an SBN by rws:3, each one epoch on the
synthetic corpus with --no-reference) still load, evaluate and resume."""

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fabula.run import TrainConfig, load_run, train
from fabula.run.stories import recipe

FIXTURES = Path(__file__).with_name("fixtures") / "saved_runs"
RUNS = {"nvdm-v1": ("nvdm", "vae"), "lstm-vae-v1": ("lstm-vae", "sa-vae:2"), "sbn-v1": ("sbn", "rws:3")}


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_loads_as_the_kind_it_was_trained_with(name):
    story, spec = RUNS[name]
    run = load_run(FIXTURES / name)
    assert run.config.story == story and run.inference.spec == spec
    assert isinstance(run.inference.story, recipe(story).story) and run.metadata["epoch"] == 1
    saved = load_file(FIXTURES / name / "checkpoint.safetensors")
    for key, value in run.inference.story.state_dict().items():
        assert torch.equal(value, saved[f"weights/story/{key}"]), key


@pytest.mark.parametrize("name", RUNS)
def test_an_old_run_resumes_for_one_more_epoch(name, tmp_path):
    story, spec = RUNS[name]
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    saved = load_run(run).config
    config = TrainConfig.from_dict({**saved.to_dict(), "run": {**saved.to_dict()["run"], "epochs": 2}})
    history = train(config, run, resume=True, progress=False)
    assert [m["epoch"] for m in history] == [2] and math.isfinite(history[0]["eval_nll"])
    assert load_run(run).metadata["epoch"] == 2
