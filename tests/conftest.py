import functools
import os
from pathlib import Path

import pyro
import pytest
import torch

import fabula.run.data
from fabula.devices import resolve
from fabula.errors import SettingsError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# One torch thread per process unless the user chose a number: torch's default (one per core)
# makes two busy processes on a small machine contend and run many times slower. The variable
# reaches the processes the tests start (torchrun workers, benchmark smoke runs) too.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
    draw = functools.cache(fabula.run.data.synthetic_sentence_corpus)

    def cached(seed):
        splits, generator = draw(seed=seed)
        return dict(splits), generator

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fabula.run.data, "synthetic_sentence_corpus", cached)
        yield
