"""Trust in the inputs: a mask, an image or a file that is not what it says stops the run with one line naming it.

Every input here is synthetic and written to tmp_path (PIL, nibabel), so each fault is known exactly.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data.datalist import build_datalist
from pipeline.data.demo_data import make_synthetic_kvasir
from pipeline.data.presets import mr_percentile, rgb_endoscopy
from pipeline.data.readers import LoadClinicalImaged
from pipeline.errors import PipelineError


def _save(path, array, **options) -> str:
    Image.fromarray(array).save(path, **options)
    return str(path)


def _frame(tmp_path, size=(32, 32)) -> str:
    """A textured RGB frame (never constant)."""
    return _save(tmp_path / "frame.png", np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))


def _square(high: int, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[8:24, 8:24] = high
    return mask


def test_three_class_png_declared_binary_stops_with_the_values_seen(tmp_path):
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 10:20], mask[:, 20:] = 100, 200
    label = _save(tmp_path / "three_class.png", mask)
    with pytest.raises(PipelineError, match=r"three_class.png: mask values \[0, 100, 200\] are not binary"):
        rgb_endoscopy()({"image": _frame(tmp_path), "label": label})


@pytest.mark.parametrize("high", [1, 255])
def test_binary_masks_stored_as_0_1_and_0_255_are_both_recognised(tmp_path, high):
    label = _save(tmp_path / f"mask_{high}.png", _square(high))
    out = rgb_endoscopy()({"image": _frame(tmp_path), "label": label})["label"]
    assert sorted(torch.unique(out).tolist()) == [0.0, 1.0] and int(out.sum()) == 16 * 16


def test_palette_mask_keeps_its_indices(tmp_path):
    mask = Image.fromarray(_square(1), mode="L").convert("P")
    mask.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)  # index 1 drawn red: luminance 76, below the threshold
    mask.save(tmp_path / "palette.png")
    out = rgb_endoscopy()({"image": _frame(tmp_path), "label": str(tmp_path / "palette.png")})["label"]
    assert int(out.sum()) == 16 * 16


def test_jpeg_noise_near_the_two_levels_is_accepted_but_a_grey_class_is_not(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[10:42, 13:45] = 255  # off the 8-pixel JPEG blocks, so its edges ring
    label = _save(tmp_path / "noisy.jpg", mask, quality=75)
    stored = np.asarray(Image.open(label))
    assert len(np.unique(stored)) > 10, "the JPEG must carry compression noise for this test to mean anything"
    image = _frame(tmp_path, (64, 64))
    out = rgb_endoscopy()({"image": image, "label": label})["label"]
    assert int(out.sum()) == 32 * 32
    mask[10:42, 13:29] = 100
    with pytest.raises(PipelineError, match=r"grey.jpg: 12.\d% of the pixels lie between the mask levels 0 and 255"):
        rgb_endoscopy()({"image": image, "label": _save(tmp_path / "grey.jpg", mask, quality=95)})


def test_sixteen_bit_mask_keeps_its_values(tmp_path):
    mask = np.zeros((32, 32), np.uint16)
    mask[:, 10:20], mask[:, 20:] = 1000, 2000  # saturated to 0/255 by an 8-bit conversion: "binary"
    label = _save(tmp_path / "mask16.png", mask)
    with pytest.raises(PipelineError, match=r"mask16.png: mask values \[0, 1000, 2000\] are not binary"):
        rgb_endoscopy()({"image": _frame(tmp_path), "label": label})


def test_sixteen_bit_png_and_tiff_are_read_at_full_depth(tmp_path):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 40).astype(np.uint16)  # 0 .. 40920
    for suffix in ("png", "tif"):
        image = rgb_endoscopy(keys=("image",))({"image": _save(tmp_path / f"ramp16.{suffix}", ramp)})["image"]
        assert float(image.max()) == pytest.approx(40920 / 65535), "scaled by the 16-bit range, not saturated"
        assert len(torch.unique(image)) == 32 * 32


def test_thirty_two_bit_pixels_are_refused_instead_of_scaled_as_8_bit(tmp_path):
    Image.fromarray(np.arange(256, dtype=np.int32).reshape(16, 16) * 1000).save(tmp_path / "int32.tif")
    with pytest.raises(PipelineError, match=r"int32.tif: 32-bit pixels \(PIL mode I\) have no range"):
        rgb_endoscopy(keys=("image",))({"image": str(tmp_path / "int32.tif")})


def test_rgba_drops_alpha_explicitly(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    image = LoadClinicalImaged("image")({"image": _save(tmp_path / "rgba.png", rgba)})["image"]
    assert image.shape == (3, 16, 16)
    np.testing.assert_array_equal(image.numpy(), rgba[..., :3].transpose(2, 1, 0))


def test_images_with_several_frames_stop(tmp_path):
    nib.save(nib.Nifti1Image(np.random.rand(4, 5, 6, 3).astype(np.float32), np.eye(4)), tmp_path / "series4d.nii.gz")
    with pytest.raises(PipelineError, match=r"series4d.nii.gz: 4D image with 3 frames of shape \(4, 5, 6\)"):
        LoadClinicalImaged("image")({"image": str(tmp_path / "series4d.nii.gz")})
    nib.save(nib.Nifti1Image(np.random.rand(4, 5, 6, 1).astype(np.float32), np.eye(4)), tmp_path / "one_frame.nii.gz")
    assert LoadClinicalImaged("image")({"image": str(tmp_path / "one_frame.nii.gz")})["image"].shape == (1, 4, 5, 6)
    frames = [Image.fromarray(np.full((8, 8), 50 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(PipelineError, match=r"stack.tif: 3 frames"):
        LoadClinicalImaged("image")({"image": str(tmp_path / "stack.tif")})


def test_constant_images_stop(tmp_path):
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), 7, np.float32), np.eye(4)), tmp_path / "blank.nii.gz")
    with pytest.raises(PipelineError, match=r"blank.nii.gz: every voxel is 7.0"):
        mr_percentile(keys=("image",))({"image": str(tmp_path / "blank.nii.gz")})
    frame = _save(tmp_path / "black.png", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(PipelineError, match=r"black.png: every voxel is 0.0"):
        rgb_endoscopy(keys=("image",))({"image": frame})


def test_datalist_recognises_0_1_masks_and_refuses_a_third_class(tmp_path):
    make_synthetic_kvasir(tmp_path, n=3, size=32)
    _save(tmp_path / "masks" / "synthetic_001.png", _square(1))
    assert build_datalist(tmp_path)["summary"]["empty_masks"] == 0, "a 0/1 mask is not empty"
    three = _square(255)
    three[8:24, 8:16] = 100
    _save(tmp_path / "masks" / "synthetic_002.png", three)
    with pytest.raises(PipelineError, match=r"masks/synthetic_002.png: mask values \[0, 100, 255\] are not binary"):
        build_datalist(tmp_path)
