"""Fixtures shared by the engine tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def synthetic_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    return tmp_path
