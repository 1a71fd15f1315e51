import functools
import os
from pathlib import Path

import pyro
import pytest
import torch

import fabula.runs
from fabula.devices import resolve
from fabula.errors import SettingsError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_validate():
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of the suite's device tests: ``FABULA_DEVICE`` (cpu by default, cuda on a GPU
    machine); a test asking for it skips, with the reason, where the machine lacks that device."""
    name = os.environ.get("FABULA_DEVICE", "cpu")
    try:
        return resolve(name)
    except SettingsError as e:
        pytest.skip(f"FABULA_DEVICE={name}: {e}")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "20news" / "train.feat").is_file():
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_sentence_corpus():
    """The synthetic sentence corpus (drawn from an LSTM oracle, seconds) drawn once for the
    module's runs, each load getting its own dict of the same read-only splits."""
    draw = functools.cache(fabula.runs.synthetic_sentence_corpus)

    def cached(seed):
        splits, generator = draw(seed=seed)
        return dict(splits), generator

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fabula.runs, "synthetic_sentence_corpus", cached)
        yield
