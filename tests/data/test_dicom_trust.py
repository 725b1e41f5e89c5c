"""Trust in DICOM inputs, on copies of the real CT and MR series made in tmp_path: broken, stray, extensionless and
gapped files, two series in one folder, and SEG frames that point outside the series."""

from __future__ import annotations

import logging
import shutil
import warnings

import numpy as np
import pydicom
import pytest

from pipeline.data.datalist import build_datalist
from pipeline.data.dicom_seg import read_dicom_seg
from pipeline.data.presets import ct_window
from pipeline.data.readers import LoadClinicalImaged, find_dicom_series
from pipeline.data.writers import write_png_mask
from pipeline.errors import PipelineError

CT = "dicom_ct_liver_seg/ct-3slice"
MR = "dicom_mr_pgbm002_t1post"


def _load(path, **options):
    return LoadClinicalImaged("image", **options)({"image": str(path)})["image"]


@pytest.fixture
def ct_copy(shared_data, tmp_path):
    folder = tmp_path / "ct"
    folder.mkdir()
    for f in (shared_data / CT).glob("*.dcm"):
        shutil.copy(f, folder / f.name)
    return folder


@pytest.mark.real_data
@pytest.mark.parametrize("fault", ["200 bytes", "header only"])
def test_truncated_or_header_only_file_names_itself(ct_copy, fault):
    source = ct_copy / "01.dcm"
    if fault == "200 bytes":
        (ct_copy / "04.dcm").write_bytes(source.read_bytes()[:200])
    else:
        header = pydicom.dcmread(source)
        del header.PixelData
        header.save_as(ct_copy / "04.dcm")
    with pytest.raises(PipelineError, match=r"04.dcm: DICOM file without .*\(truncated or header only\)"):
        _load(ct_copy)
    for other in ("01.dcm", "02.dcm", "03.dcm"):  # alone in its folder it used to end in an AttributeError
        (ct_copy / other).unlink()
    with pytest.raises(PipelineError, match=r"04.dcm: DICOM file without"):
        find_dicom_series(ct_copy)


@pytest.mark.real_data
def test_non_dicom_files_in_a_series_folder_are_skipped_with_a_note(ct_copy, caplog):
    write_png_mask(np.eye(8, dtype=np.uint8), ct_copy / "preview.jpg")
    (ct_copy / "VERSION").write_text("3.1\n")
    with caplog.at_level(logging.INFO, logger="pipeline.data.readers"):
        image = _load(ct_copy)
    assert image.shape == (1, 512, 512, 3)
    notes = " ".join(r.getMessage() for r in caplog.records)
    assert "preview.jpg" in notes and "VERSION" in notes and "not DICOM, skipped" in notes


@pytest.mark.real_data
def test_extensionless_and_uid_named_dicom_files_are_found(ct_copy, shared_data):
    for index, path in enumerate(sorted(ct_copy.iterdir())):
        path.rename(ct_copy / ("IM000" + str(index) if index else "1.2.840.113619.2.55.3.604688"))
    series = find_dicom_series(ct_copy)
    assert len(series.files) == 3
    assert _load(ct_copy).shape == (1, 512, 512, 3)
    shutil.copy(shared_data / "dicom_ct_liver_seg" / "seg" / "liver.dcm", ct_copy.parent / "SEG0001")
    assert build_datalist(ct_copy.parent)["training"] == [{"image": "ct", "label": "SEG0001"}]
    label = ct_window(num_classes=2)({"image": str(ct_copy), "label": str(ct_copy.parent / "SEG0001")})["label"]
    assert label.shape == (1, 512, 512, 3) and int(label.sum()) > 0


@pytest.mark.real_data
def test_two_series_error_names_the_series_uid_option(ct_copy, shared_data):
    shutil.copy(shared_data / MR / "000000.dcm", ct_copy / "mr.dcm")
    with pytest.raises(PipelineError, match=r"holds 2 series; choose one with the option series_uid"):
        _load(ct_copy)
    uid = str(pydicom.dcmread(ct_copy / "01.dcm", stop_before_pixels=True).SeriesInstanceUID)
    assert _load(ct_copy, series_uid=uid).shape == (1, 512, 512, 3)


@pytest.mark.real_data
def test_a_missing_slice_stops_unless_gaps_are_allowed(shared_data, tmp_path):
    order = [f.name for f in find_dicom_series(shared_data / MR).files[:4]]  # four neighbours, 6.5 mm apart
    for name in order[:2] + order[3:]:
        shutil.copy(shared_data / MR / name, tmp_path / name)
    with pytest.raises(PipelineError, match=rf"gap of 13.000 mm between {order[1]} and {order[3]} .*allow_gaps"):
        _load(tmp_path)
    with pytest.warns(UserWarning, match=rf"gap of 13.000 mm between {order[1]} and {order[3]}"):
        assert _load(tmp_path, allow_gaps=True).shape[-1] == 3
    with pytest.raises(PipelineError, match=r"gap of 13.000 mm"):  # the word typed on a command line means no
        _load(tmp_path, allow_gaps="false")
    with pytest.raises(PipelineError, match=r"allow_gaps must be true or false \(--allow_gaps\), got 'maybe'"):
        _load(tmp_path, allow_gaps="maybe")


@pytest.mark.real_data
def test_seg_frame_referencing_an_instance_outside_the_series_is_an_error(ct_copy, shared_data):
    seg = shared_data / "dicom_ct_liver_seg" / "seg" / "liver.dcm"
    (ct_copy / "01.dcm").unlink()  # an end slice (no gap left behind) that holds liver in the SEG
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PipelineError, match=r"liver.dcm: 1 frames? reference instances outside series .*: "
                                                r"1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.2343\d.1"):
            read_dicom_seg(seg, ct_copy)
