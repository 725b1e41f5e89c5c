"""The synthetic demo dataset: deterministic, named synthetic, and usable by the datalist command."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from pipeline.data.commands import demo_data
from pipeline.data.datalist import build_datalist


def _run(output, seed):
    parser = argparse.ArgumentParser()
    demo_data.add_arguments(parser)
    return demo_data.run(parser.parse_args(["-o", str(output), "--seed", str(seed)]))


def test_demo_data_is_deterministic_and_synthetic(tmp_path):
    assert _run(tmp_path / "a", 0) == 0
    _run(tmp_path / "b", 0)
    _run(tmp_path / "c", 1)
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*.png"))}  # noqa: E731
    assert files(tmp_path / "a") == files(tmp_path / "b") != files(tmp_path / "c")
    assert all(name.split("/")[1].startswith("synthetic_") for name in files(tmp_path / "a"))
    assert "SYNTHETIC" in (tmp_path / "a" / "SYNTHETIC.md").read_text()
    mask = np.asarray(Image.open(tmp_path / "a" / "masks" / "synthetic_000.png"))
    assert set(np.unique(mask)) == {0, 255}
    image = Image.open(tmp_path / "a" / "images" / "synthetic_000.png")
    assert image.mode == "RGB" and image.size == (160, 160)
    assert build_datalist(tmp_path / "a")["numTraining"] == 12
