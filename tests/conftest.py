"""Shared test fixtures: the real data beside the repository and small helpers.

Tests that need ``../shared/data`` ask for the ``shared_data`` fixture: without the folder they skip with the
reason, except under ``.ci/run`` (``PIPELINE_REQUIRE_SHARED=1``), where a missing folder is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIPELINE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        message = f"real data folder {SHARED_DATA} is absent"
        if os.environ.get("PIPELINE_REQUIRE_SHARED") == "1":
            pytest.fail(message + " (PIPELINE_REQUIRE_SHARED=1: CI must have it)")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
