"""Datalists from the three layouts (real Kvasir, hippocampus and DICOM subsets linked into tmp) and their faults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from pipeline.data.datalist import build_datalist, load_datalist, resolve_paths, write_json
from pipeline.data.demo_data import make_synthetic_kvasir
from pipeline.errors import PipelineError

KVASIR = ["cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0qx73cjw570799j4n5cjze"]
HIPPO = ["hippocampus_001", "hippocampus_003"]


def _link(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


@pytest.mark.real_data
def test_kvasir_layout(shared_data, tmp_path):
    for name in KVASIR:
        for sub in ("images", "masks"):
            _link(shared_data / "kvasir_seg" / sub / f"{name}.jpg", tmp_path / sub / f"{name}.jpg")
    datalist = build_datalist(tmp_path, name="kvasir", labels={"0": "background", "1": "polyp"})
    assert datalist["layout"] == "2d" and datalist["labels"]["1"] == "polyp"
    assert datalist["training"][0] == {"image": f"images/{KVASIR[0]}.jpg", "label": f"masks/{KVASIR[0]}.jpg"}
    assert datalist["summary"]["empty_masks"] == 0
    entries = load_datalist(write_json(datalist, tmp_path / "datalist.json"))
    assert entries[2]["image"] == str(tmp_path / "images" / f"{KVASIR[2]}.jpg")


@pytest.mark.real_data
def test_msd_layout_finds_label_values(shared_data, tmp_path):
    for name in HIPPO:
        for sub in ("imagesTr", "labelsTr"):
            _link(shared_data / "msd_hippocampus" / sub / f"{name}.nii.gz", tmp_path / sub / f"{name}.nii.gz")
    datalist = build_datalist(tmp_path)
    assert datalist["layout"] == "msd-3d" and datalist["numTraining"] == 2
    assert datalist["labels"] == {"0": "background", "1": "label 1", "2": "label 2"}
    assert datalist["training"][1]["label"] == "labelsTr/hippocampus_003.nii.gz"


@pytest.mark.real_data
def test_dicom_tree_pairs_seg_with_its_series(shared_data, tmp_path):
    for f in (shared_data / "dicom_ct_liver_seg" / "ct-3slice").glob("*.dcm"):
        _link(f, tmp_path / "patient1" / "ct" / f.name)
    _link(shared_data / "dicom_ct_liver_seg" / "seg" / "liver.dcm", tmp_path / "patient1" / "seg" / "liver.dcm")
    datalist = build_datalist(tmp_path)
    assert datalist["training"] == [{"image": "patient1/ct", "label": "patient1/seg/liver.dcm"}]
    (tmp_path / "patient1" / "seg" / "liver.dcm").unlink()
    with pytest.raises(PipelineError, match=r"unpaired DICOM objects: \['patient1/ct \(series .* has no SEG\)'\]"):
        build_datalist(tmp_path)


def test_unpaired_files_are_listed(tmp_path):
    make_synthetic_kvasir(tmp_path, n=3, size=32)
    (tmp_path / "masks" / "synthetic_001.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    with pytest.raises(PipelineError, match=r"2 unpaired files .*\['images/synthetic_001.png', 'masks/orphan.png'\]"):
        build_datalist(tmp_path)


def test_empty_mask_is_allowed_and_reported(tmp_path):
    make_synthetic_kvasir(tmp_path, n=3, size=32)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "synthetic_002.png")
    summary = build_datalist(tmp_path)["summary"]
    assert summary["empty_masks"] == 1 and summary["empty_mask_files"] == ["masks/synthetic_002.png"]


def test_missing_file_in_datalist_is_named(tmp_path):
    make_synthetic_kvasir(tmp_path, n=2, size=32)
    path = write_json(build_datalist(tmp_path), tmp_path / "datalist.json")
    (tmp_path / "images" / "synthetic_001.png").unlink()
    with pytest.raises(PipelineError, match=r"datalist.json \('training'\) names image 'images/synthetic_001.png', "
                                            r"which does not exist under"):
        load_datalist(path)
    assert json.loads(path.read_text())["name"] == tmp_path.name


def test_paths_are_joined_as_monai_joins_them_and_every_missing_file_is_counted(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    entries = [{"image": "images/../images/a.png", "label": str(tmp_path / "images" / "a.png"), "id": 7}]
    assert resolve_paths(entries, tmp_path, "split.json") == load_decathlon_datalist_like(entries, tmp_path)
    assert resolve_paths([{"image": ["images/a.png", "images/a.png"]}], tmp_path, "s")[0]["image"] == [
        str(tmp_path / "images" / "a.png")] * 2
    gone = [{"image": "images/a.png", "label": "masks/a.png"}, {"image": "images/b.png"}]
    with pytest.raises(PipelineError, match=r"^split.json names label 'masks/a.png', which does not exist under .* "
                                            r"\(and 1 more: \['images/b.png'\]\)$"):
        resolve_paths(gone, tmp_path, "split.json")


def load_decathlon_datalist_like(entries: list[dict], base_dir) -> list[dict]:
    """What MONAI's own loader makes of ``entries`` (written to a datalist file) with ``base_dir``."""
    path = write_json({"training": entries}, Path(base_dir) / "monai.json")
    return load_decathlon_datalist(path, is_segmentation=True, base_dir=base_dir)
