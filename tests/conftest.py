import os
from pathlib import Path

import pytest
import torch

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
    from deepinv_meta.tasks import meta_prior_tasks

    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.avg_pool2d(torch.rand(24, 1, 32, 32, generator=g), 3, 1, 1)
    return meta_prior_tasks(images[:, :, :16, :16], images[:6, :, 16:, 16:], blur_psf_size=5)
