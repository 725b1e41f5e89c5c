"""Prediction writers: NIfTI keeps the input affine, PNG masks and overlays keep the image orientation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from pipeline.data.readers import LoadClinicalImaged
from pipeline.data.writers import write_prediction
from pipeline.errors import PipelineError


@pytest.mark.real_data
def test_nifti_prediction_has_the_input_affine(shared_data, tmp_path):
    path = shared_data / "msd_hippocampus" / "labelsTr" / "hippocampus_001.nii.gz"
    image = LoadClinicalImaged("image")({"image": str(path)})["image"]
    written = write_prediction(image[0].numpy(), image, tmp_path, "hippocampus_001")
    assert [p.name for p in written] == ["hippocampus_001.nii.gz"]
    saved, original = nib.load(written[0]), nib.load(path)
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.asarray(original.dataobj))


@pytest.mark.real_data
def test_png_mask_round_trips_a_kvasir_mask(shared_data, tmp_path):
    name = "cju0qkwl35piu0993l0dewei2"
    image = LoadClinicalImaged("image")({"image": str(shared_data / "kvasir_seg" / "images" / f"{name}.jpg")})["image"]
    mask = np.asarray(Image.open(shared_data / "kvasir_seg" / "masks" / f"{name}.jpg").convert("L")) > 127
    written = write_prediction(mask.T.astype(np.uint8), image, tmp_path, name)
    assert [p.name for p in written] == [f"{name}_mask.png", f"{name}_overlay.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])) > 0, mask)
    overlay = Image.open(written[1])
    assert overlay.size == Image.open(shared_data / "kvasir_seg" / "images" / f"{name}.jpg").size


def test_prediction_of_the_wrong_shape_is_refused(tmp_path):
    from monai.data import MetaTensor

    image = MetaTensor(np.zeros((1, 8, 8, 4), np.float32))
    with pytest.raises(PipelineError, match=r"case: prediction shape \(8, 8, 3\) differs from image shape \(8, 8, 4\)"):
        write_prediction(np.zeros((8, 8, 3)), image, tmp_path, "case")


def test_overlay_draws_the_box_prompts_and_each_object_gets_its_own_mask(tmp_path):
    import torch
    from monai.data import MetaTensor

    from pipeline.data.writers import BOX_COLOUR, write_prediction

    image = MetaTensor(torch.zeros(3, 40, 30), meta={"filename_or_obj": "frame.png"})  # (x, y): 40 wide, 30 high
    label = torch.zeros(1, 40, 30)
    objects = torch.zeros(2, 40, 30)
    objects[0, 2:5, 2:5] = objects[1, 20:30, 10:20] = 1
    written = write_prediction(label, image, tmp_path, "frame", boxes=torch.tensor([[5.0, 3.0, 35.0, 25.0]]),
                               objects=objects)
    assert [p.name for p in written] == ["frame_mask.png", "frame_overlay.png", "frame_object1_mask.png",
                                         "frame_object2_mask.png"]
    overlay = np.asarray(Image.open(written[1]))
    assert overlay.shape == (30, 40, 3)
    assert tuple(overlay[3, 20]) == tuple(overlay[25, 20]) == tuple(overlay[15, 5]) == BOX_COLOUR, "box edges"
    assert tuple(overlay[15, 20]) == (0, 0, 0), "inside the box the image shows"
    assert (np.asarray(Image.open(written[3])) > 0).sum() == 100


def test_label_files_keep_the_values_viewers_expect_and_both_nifti_transforms(tmp_path):
    """One class: PNG 0/255 (Kvasir's mask convention); more classes: the class values; (x, y) arrays become
    rows = y. NIfTI: uint8 labels, sform and qform both the affine (code 1), so every viewer places it alike."""
    import nibabel as nib

    from pipeline.data.writers import write_nifti, write_png_mask

    label = np.zeros((40, 30))
    label[5:20, 3:9] = 1
    binary = np.asarray(Image.open(write_png_mask(label, tmp_path / "one.png")))
    assert binary.shape == (30, 40) and set(np.unique(binary)) == {0, 255} and binary[3, 5] == 255
    label[30:35, 20:25] = 2
    classes = np.asarray(Image.open(write_png_mask(label, tmp_path / "two.png")))
    assert set(np.unique(classes)) == {0, 1, 2} and classes[22, 32] == 2
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-100.0, 20.0, 7.5]
    saved = nib.load(write_nifti(np.stack([label] * 3, axis=-1), affine, tmp_path / "label.nii.gz"))
    assert saved.get_data_dtype() == np.uint8 and saved.shape == (40, 30, 3)
    for transform, code in (saved.header.get_sform(coded=True), saved.header.get_qform(coded=True)):
        np.testing.assert_allclose(transform, affine, atol=1e-5)
        assert code == 1
