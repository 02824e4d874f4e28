import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/helpers.py

# Offline data (weights, image sets) for the tests that need them; they skip when it is absent.
_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "DEEPINV_META_DATA" not in os.environ and _SHARED.is_dir():
    os.environ["DEEPINV_META_DATA"] = str(_SHARED)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def small_tasks():
    from helpers import make_small_tasks

    return make_small_tasks()


@pytest.fixture
def offline_data() -> Path:
    """The offline data folder (``$DEEPINV_META_DATA``); the test is skipped without it."""
    root = os.environ.get("DEEPINV_META_DATA")
    if not root:
        pytest.skip("needs the offline data (DEEPINV_META_DATA)")
    return Path(root)
