"""Presets on real data, label transforms, and the validation errors that name the files."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from pipeline.data.presets import (
    BinariseLabeld,
    Preprocessing,
    RemapLabeld,
    ValidateImageLabeld,
    mr_percentile,
    preset,
    rgb_endoscopy,
)
from pipeline.errors import PipelineError


@pytest.mark.real_data
def test_rgb_endoscopy_on_kvasir(shared_data):
    name = "cju0qkwl35piu0993l0dewei2.jpg"
    root = shared_data / "kvasir_seg"
    data = rgb_endoscopy()({"image": str(root / "images" / name), "label": str(root / "masks" / name)})
    assert data["image"].shape[0] == 3 and data["label"].shape == (1, *data["image"].shape[1:])
    assert set(torch.unique(data["label"]).tolist()) == {0.0, 1.0}
    assert 0.0 <= float(data["image"].min()) and float(data["image"].max()) == pytest.approx(1.0, abs=0.01)


@pytest.mark.real_data
def test_a_cache_dataset_keeps_everything_before_the_first_random_transform(shared_data):
    """A preset nested in a bundle's chain is inlined, so MONAI's CacheDataset caches the decoded, resized image
    and re-runs only the random tail (here a flip) at each access."""
    from monai.data import CacheDataset
    from monai.transforms import Compose, RandFlipd, Resized

    root = shared_data / "kvasir_seg"
    name = "cju0qkwl35piu0993l0dewei2.jpg"
    chain = Preprocessing([rgb_endoscopy(), Compose([Resized(["image", "label"], (64, 64))]),
                           RandFlipd(["image", "label"], prob=1.0, spatial_axis=0)])
    assert [type(t).__name__ for t in chain.transforms][-2:] == ["Resized", "RandFlipd"]
    case = {"image": str(root / "images" / name), "label": str(root / "masks" / name)}
    dataset = CacheDataset([case], transform=chain, cache_rate=1.0, progress=False)
    cached = dataset._cache[0]
    assert cached["image"].shape == (3, 64, 64), "the cache holds the decoded and resized image"
    assert torch.equal(dataset[0]["image"], torch.flip(cached["image"], dims=[1])), "only the flip runs again"


@pytest.mark.real_data
def test_mr_percentile_on_hippocampus_and_label_range(shared_data):
    root = shared_data / "msd_hippocampus"
    case = {
        "image": str(root / "imagesTr" / "hippocampus_001.nii.gz"),
        "label": str(root / "labelsTr" / "hippocampus_001.nii.gz"),
    }
    data = mr_percentile(num_classes=3)(case)
    assert float(data["image"].min()) == 0.0 and float(data["image"].max()) == 1.0
    assert set(torch.unique(data["label"]).tolist()) == {0.0, 1.0, 2.0}
    with pytest.raises(
        PipelineError, match=r"hippocampus_001.nii.gz: label values \[2.0\] outside the declared classes 0..1"
    ):
        mr_percentile(num_classes=2)(case)


@pytest.mark.real_data
def test_image_and_label_of_different_cases_are_named(shared_data):
    root = shared_data / "msd_hippocampus"
    case = {
        "image": str(root / "imagesTr" / "hippocampus_001.nii.gz"),
        "label": str(root / "labelsTr" / "hippocampus_003.nii.gz"),
    }
    with pytest.raises(
        PipelineError, match=r"hippocampus_001.nii.gz and .*hippocampus_003.nii.gz: spatial shapes differ"
    ):
        mr_percentile()(case)


def test_affine_mismatch_nan_and_unknown_preset(tmp_path):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(
        nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), affine), tmp_path / "synthetic_image.nii.gz"
    )
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "synthetic_label.nii.gz")
    case = {"image": str(tmp_path / "synthetic_image.nii.gz"), "label": str(tmp_path / "synthetic_label.nii.gz")}
    with pytest.raises(
        PipelineError, match=r"synthetic_image.nii.gz and .*synthetic_label.nii.gz: affines differ by up to 1 mm"
    ):
        mr_percentile()(case)
    values = np.ones((4, 4, 4), np.float32)
    values[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(values, np.eye(4)), tmp_path / "synthetic_nan.nii.gz")
    with pytest.raises(PipelineError, match=r"synthetic_nan.nii.gz: 1 NaN/inf intensities"):
        mr_percentile()({"image": str(tmp_path / "synthetic_nan.nii.gz"), "label": case["label"]})
    with pytest.raises(PipelineError, match="unknown preprocessing preset 'ct'"):
        preset("ct")


def test_binarise_and_remap():
    label = MetaTensor(
        torch.tensor([[[0.0, 8.0], [250.0, 255.0]]]).repeat(3, 1, 1), meta={"filename_or_obj": "mask.jpg"}
    )
    binary = BinariseLabeld("label")({"label": label})["label"]
    assert binary.tolist() == [[[0.0, 0.0], [1.0, 1.0]]] and binary.meta["filename_or_obj"] == "mask.jpg"
    remapped = RemapLabeld("label", {0: 0, 1: 1, 2: 2, 4: 3})({"label": torch.tensor([[0, 4, 2]])})["label"]
    assert remapped.tolist() == [[0, 3, 2]]
    with pytest.raises(PipelineError, match=r"label values \[7\] have no mapping"):
        RemapLabeld("label", {0: 0, 1: 1})({"label": torch.tensor([[0, 7]])})
    image = MetaTensor(torch.tensor([[[1.0, float("inf")]]]), meta={"filename_or_obj": "synthetic.png"})
    with pytest.raises(PipelineError, match="synthetic.png: 1 NaN/inf"):
        ValidateImageLabeld(label_key=None)({"image": image})
