"""DICOM-SEG in and out on the real dcmqi liver CT (3 slices)."""

from __future__ import annotations

import nrrd
import numpy as np
import pydicom
import pytest

from pipeline.data.dicom_seg import read_dicom_seg, segment_property, write_dicom_seg
from pipeline.data.presets import ct_window
from pipeline.data.readers import find_dicom_series
from pipeline.errors import PipelineError

CT_SOPS = {f"1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.{n}.1" for n in (23431, 23432, 23433)}


@pytest.fixture(scope="module")
def liver(shared_data):
    root = shared_data / "dicom_ct_liver_seg"
    label, _ = nrrd.read(str(root / "labelmaps" / "liver_seg.nrrd"))
    return root, label


@pytest.mark.real_data
def test_seg_read_equals_nrrd_label_map(liver):
    root, reference = liver
    label, names = read_dicom_seg(root / "seg" / "liver.dcm", root / "ct-3slice")
    assert names == {1: "Liver"}
    assert label.shape == reference.shape == (512, 512, 3)
    np.testing.assert_array_equal(label, reference)
    assert label.sum() > 0


@pytest.mark.real_data
def test_written_seg_reads_back_identical_and_references_the_ct(liver, tmp_path):
    root, reference = liver
    path = write_dicom_seg(reference.astype(np.uint8), root / "ct-3slice", tmp_path / "liver_out.dcm", {1: "liver"})
    label, names = read_dicom_seg(path, root / "ct-3slice")
    np.testing.assert_array_equal(label, reference)
    assert names == {1: "liver"}
    seg = pydicom.dcmread(path)
    segment = seg.SegmentSequence[0]
    assert (segment.SegmentedPropertyTypeCodeSequence[0].CodeValue, segment.SegmentedPropertyTypeCodeSequence[0]
            .CodingSchemeDesignator) == ("10200004", "SCT"), "coded as Liver, not the generic Tissue"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Anatomical Structure"
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == CT_SOPS
    assert (
        seg.ReferencedSeriesSequence[0].SeriesInstanceUID == find_dicom_series(root / "ct-3slice").series_instance_uid
    )


@pytest.mark.real_data
def test_seg_label_loads_on_the_image_grid_in_a_preset(liver):
    root, reference = liver
    data = ct_window(num_classes=2)({"image": str(root / "ct-3slice"), "label": str(root / "seg" / "liver.dcm")})
    assert data["label"].shape == data["image"].shape == (1, 512, 512, 3)
    np.testing.assert_array_equal(data["label"][0].numpy(), reference)
    np.testing.assert_allclose(data["label"].affine.numpy(), data["image"].affine.numpy())
    assert 0.0 <= float(data["image"].min()) and float(data["image"].max()) <= 1.0


@pytest.mark.real_data
def test_wrong_shape_and_non_seg_are_refused(liver, tmp_path):
    root, _ = liver
    with pytest.raises(PipelineError, match="label shape .* does not match series"):
        write_dicom_seg(np.zeros((4, 4, 3), np.uint8), root / "ct-3slice", tmp_path / "x.dcm")
    with pytest.raises(PipelineError, match="01.dcm: not a readable DICOM-SEG"):
        read_dicom_seg(root / "ct-3slice" / "01.dcm", root / "ct-3slice")


@pytest.mark.parametrize(("name", "category", "kind"), [
    ("polyp", "49755003", "41329004"), ("Liver", "91723000", "10200004"), ("tumour", "49755003", "108369006"),
    ("anterior hippocampus", "91723000", "5366008"), ("left_kidney", "91723000", "64033007"),
    ("label 3", "85756007", "85756007"),
])
def test_segments_are_coded_from_their_class_names(name, category, kind):
    found = segment_property(name)
    assert (found[0].value, found[1].value) == (category, kind)
    assert found[1].scheme_designator == "SCT"


def test_a_user_mapping_codes_a_segment_and_a_bad_one_is_one_error():
    codes = {"cyst": {"category": "49755003:Morphologically Abnormal Structure", "type": "SCT:441457006:Cyst"}}
    category, kind = segment_property("cyst", codes)
    assert (kind.value, kind.meaning, category.value) == ("441457006", "Cyst", "49755003")
    with pytest.raises(PipelineError, match=r"segment codes for 'cyst': a code is 'value:meaning'"):
        segment_property("cyst", {"cyst": {"category": "49755003", "type": "x:y"}})
    with pytest.raises(PipelineError, match=r"segment codes for 'cyst' must be \{'category'"):
        segment_property("cyst", {"cyst": "441457006"})
