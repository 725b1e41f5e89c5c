"""SimpleITK DICOM series reader against MONAI's PydicomReader and SimpleITK's own NIfTI conversion, on real series."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from monai.data import PydicomReader
from monai.transforms import LoadImage, Orientation

from pipeline.data.readers import LoadClinicalImaged, find_dicom_series
from pipeline.errors import PipelineError

CT = "dicom_ct_liver_seg/ct-3slice"
MR = "dicom_mr_pgbm002_t1post"


def _load(path):
    return LoadClinicalImaged("image")({"image": str(path)})["image"]


def _pydicom(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PydicomReader warns about the SOURCE.md beside the MR slices
        return LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(str(path))


@pytest.mark.real_data
@pytest.mark.parametrize("series, atol", [(CT, 1e-6), (MR, 1e-3)])
def test_same_voxels_and_ras_affine_as_pydicom_reader(shared_data, series, atol):
    # PydicomReader stacks by InstanceNumber, we by position, so the slice axis may run the other way:
    # reorienting both to RAS compares the same voxel-to-world mapping.
    ours, theirs = _load(shared_data / series), _pydicom(shared_data / series)
    assert ours.meta["space"] == theirs.meta["space"] == "RAS"
    ours, theirs = Orientation("RAS", labels=None)(ours), Orientation("RAS", labels=None)(theirs)
    np.testing.assert_allclose(ours.affine.numpy(), theirs.affine.numpy(), atol=atol)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.real_data
def test_ct_rescale_slope_intercept_and_slice_order(shared_data):
    image = _load(shared_data / CT)
    assert image.shape == (1, 512, 512, 3)
    assert float(image.min()) == -3024.0  # stored -2000 with RescaleIntercept -1024
    series = find_dicom_series(shared_data / CT)
    assert [f.name for f in series.files] == ["03.dcm", "02.dcm", "01.dcm"]  # ascending z along the normal
    np.testing.assert_allclose(image.affine.numpy()[:3, 3], [235.2, 226.8, -128.69], atol=1e-3)


@pytest.mark.real_data
def test_oblique_mr_nifti_matches_simpleitk_conversion(shared_data, tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from pipeline.data.writers import write_nifti

    image = _load(shared_data / MR)
    ours = write_nifti(image[0].numpy(), image.affine, tmp_path / "ours.nii.gz")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(shared_data / MR)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "sitk.nii.gz"))
    reference = nib.load(tmp_path / "sitk.nii.gz").affine
    np.testing.assert_allclose(nib.load(ours).affine, reference, atol=1e-4)
    assert abs(reference[2, 1]) > 0.1  # really oblique: the in-plane axis tilts towards S
    np.testing.assert_allclose(np.linalg.norm(reference[:3, 2]), 6.5, atol=1e-3)


@pytest.mark.real_data
def test_folder_with_two_series_needs_a_uid(shared_data, tmp_path):
    for f in (shared_data / CT).glob("*.dcm"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(shared_data / MR / "000000.dcm", tmp_path / "mr.dcm")
    with pytest.raises(
        PipelineError, match="holds 2 series.*1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    ):
        find_dicom_series(tmp_path)
    ct_uid = "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1"
    assert len(find_dicom_series(tmp_path, ct_uid).files) == 3
    with pytest.raises(PipelineError, match="no series with SeriesInstanceUID 9.9"):
        find_dicom_series(tmp_path, "9.9")


@pytest.mark.real_data
def test_non_dicom_and_truncated_files_are_named(shared_data, tmp_path):
    for f in (shared_data / CT).glob("*.dcm"):
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "notes.md").write_text("ignored: not a DICOM suffix")
    (tmp_path / "04.dcm").write_text("not dicom")
    with pytest.raises(PipelineError, match="04.dcm: not a readable DICOM file"):
        _load(tmp_path)
    (tmp_path / "04.dcm").unlink()
    data = (tmp_path / "02.dcm").read_bytes()
    (tmp_path / "02.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"02.dcm: pixel data cannot be decoded"):
        _load(tmp_path)


def test_unreadable_format_and_missing_file(tmp_path):
    (tmp_path / "scan.xyz").write_text("?")
    with pytest.raises(PipelineError, match="scan.xyz: cannot be read as an image"):
        _load(tmp_path / "scan.xyz")
    with pytest.raises(PipelineError, match="absent.nii.gz: file not found"):
        _load(tmp_path / "absent.nii.gz")
