"""3D-to-2D slicing with foreground-aware sampling, and reassembly of per-slice predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.presets import mr_percentile
from pipeline.data.slices import SliceDataset, assemble_volume
from pipeline.errors import PipelineError


@pytest.mark.real_data
def test_slices_of_hippocampus_reassemble_into_the_volume(shared_data):
    root = shared_data / "msd_hippocampus"
    case = {
        "image": str(root / "imagesTr" / "hippocampus_001.nii.gz"),
        "label": str(root / "labelsTr" / "hippocampus_001.nii.gz"),
    }
    dataset = SliceDataset([case], volume_transform=mr_percentile(num_classes=3), slice_axis=0)
    volume = dataset.volumes[0]["label"][0].numpy()
    assert len(dataset) == volume.shape[0]
    item = dataset[5]
    assert item["image"].shape == (1, *volume.shape[1:]) and item["slice_index"] == 5 and item["case"] == 0
    items = [dataset[i] for i in range(len(dataset))]
    rebuilt = assemble_volume(
        [i["label"] for i in items], [i["slice_index"] for i in items], volume.shape[0], slice_axis=0
    )
    np.testing.assert_array_equal(rebuilt, volume)


def test_foreground_aware_sampling_is_deterministic():
    label = torch.zeros(1, 8, 8, 40)
    label[0, 2:5, 2:5, 30:33] = 1  # synthetic: 3 of 40 slices hold foreground
    volume = {"image": torch.rand(1, 8, 8, 40), "label": label}
    dataset = SliceDataset([volume], samples_per_volume=20, foreground_ratio=0.5, seed=1)
    picked = [k for _, k in dataset.index]
    assert sum(30 <= k < 33 for k in picked) == 10
    assert picked == [k for _, k in SliceDataset([volume], samples_per_volume=20, seed=1).index]
    dataset.resample(1)
    assert [k for _, k in dataset.index] != picked


def test_assemble_refuses_duplicates():
    with pytest.raises(PipelineError, match="occurs twice"):
        assemble_volume([np.zeros((2, 2))] * 2, [1, 1], depth=3)


@pytest.mark.parametrize(("axis", "rows", "columns"), [(2, 1, 0), (1, 2, 0), (0, 2, 1)])
def test_slice_layout_puts_the_slice_axis_last_and_the_plane_in_rows_columns_order(axis, rows, columns):
    from monai.transforms import Transposed

    from pipeline.data.slices import slice_layout

    volume = torch.zeros(1, 3, 4, 5)  # (C, x, y, z)
    moved = Transposed("image", indices=slice_layout(axis))({"image": volume})["image"]
    sizes = volume.shape[1:]
    assert moved.shape == (1, sizes[rows], sizes[columns], sizes[axis])
    with pytest.raises(PipelineError, match=r"slice_axis must be 0, 1 or 2"):
        slice_layout(3)
