import os
from pathlib import Path

import pyro
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_validate():
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield


@pytest.fixture
def device() -> torch.device:
    """The device under test: ``FABULA_TEST_DEVICE`` (default cpu)."""
    return torch.device(os.environ.get("FABULA_TEST_DEVICE", "cpu"))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "20news" / "train.feat").is_file():
        pytest.skip(f"real corpora not found at {SHARED_DATA}")
    return SHARED_DATA
