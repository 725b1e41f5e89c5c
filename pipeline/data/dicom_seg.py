"""DICOM-SEG in and out, on the grid of the image series it segments.

Reading asks highdicom for the segment frames in the order of the referenced series' SOP instances, as sorted by
:func:`pipeline.data.readers.find_dicom_series`, so the label volume lands voxel for voxel on the image that
``SimpleITKDicomReader`` returns (``(x, y, z)``, same affine). Writing builds a SEG with highdicom that references
every source instance, which is what viewers (OHIF, 3D Slicer, PACS) use to overlay it on the right slices.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipeline.data.readers import DicomSeries, find_dicom_series
from pipeline.errors import PipelineError

__all__ = ["LoadDicomSegd", "read_dicom_seg", "referenced_series_uid", "segment_property", "write_dicom_seg"]

# SNOMED CT codes for the structures this project's bundles segment, by class name: (category, type), each as
# (code value, meaning). Viewers and PACS read the type, not the free-text label, to know what a segment is.
_ANATOMY = ("91723000", "Anatomical Structure")
_ABNORMAL = ("49755003", "Morphologically Abnormal Structure")
SEGMENT_PROPERTIES = {
    "polyp": (_ABNORMAL, ("41329004", "Polyp")),
    "tumour": (_ABNORMAL, ("108369006", "Neoplasm")),
    "tumor": (_ABNORMAL, ("108369006", "Neoplasm")),
    "neoplasm": (_ABNORMAL, ("108369006", "Neoplasm")),
    "lesion": (_ABNORMAL, ("52988006", "Lesion")),
    "mass": (_ABNORMAL, ("4147007", "Mass")),
    "liver": (_ANATOMY, ("10200004", "Liver")),
    "hippocampus": (_ANATOMY, ("5366008", "Hippocampus")),
    "kidney": (_ANATOMY, ("64033007", "Kidney")),
    "spleen": (_ANATOMY, ("78961009", "Spleen")),
    "pancreas": (_ANATOMY, ("15776009", "Pancreas")),
    "prostate": (_ANATOMY, ("41216001", "Prostate")),
    "brain": (_ANATOMY, ("12738006", "Brain")),
    "heart": (_ANATOMY, ("80891009", "Heart")),
    "lung": (_ANATOMY, ("39607008", "Lung")),
}
_TISSUE = (("85756007", "Tissue"), ("85756007", "Tissue"))


def _segread(path: Path):
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as error:  # highdicom/pydicom raise several types for non-SEG or broken files
        raise PipelineError(f"{path}: not a readable DICOM-SEG ({type(error).__name__}: {error})") from error


def referenced_series_uid(seg_path: str | Path) -> str:
    """SeriesInstanceUID of the image series a SEG segments (ReferencedSeriesSequence)."""
    import pydicom

    seg_path = Path(seg_path)
    try:
        header = pydicom.dcmread(seg_path, stop_before_pixels=True)
        return str(header.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except Exception as error:
        raise PipelineError(f"{seg_path}: DICOM-SEG without a readable ReferencedSeriesSequence ({error})") from error


def read_dicom_seg(seg_path: str | Path, series: DicomSeries | str | Path) -> tuple[np.ndarray, dict[int, str]]:
    """Label volume ``(x, y, z)`` (uint8/uint16, value = segment number, 0 = background) on ``series``' grid.

    Returns the volume and the segment labels ``{number: SegmentLabel}``. Slices with no SEG frame are background.
    """
    seg_path = Path(seg_path)
    seg = _segread(seg_path)
    if not isinstance(series, DicomSeries):
        series = find_dicom_series(series, referenced_series_uid(seg_path))
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if not referenced & set(series.sop_instance_uids):
        raise PipelineError(
            f"{seg_path}: references none of the {len(series.files)} instances of series {series.series_instance_uid}"
        )
    _check_frame_sources(seg, seg_path, series)
    _check_frame_positions(seg, seg_path, series)
    numbers = list(seg.get_segment_numbers())
    dtype = np.uint8 if max(numbers) < 256 else np.uint16
    try:
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(series.sop_instance_uids),
            combine_segments=True,
            assert_missing_frames_are_empty=True,
            ignore_spatial_locations=True,  # checked by _check_frame_positions instead of trusting the flag
            dtype=dtype,
        )
    except Exception as error:
        raise PipelineError(
            f"{seg_path}: segments cannot be placed on series {series.series_instance_uid} ({error})"
        ) from error
    labels = {int(n): str(seg.get_segment_description(n).segment_label) for n in numbers}
    return np.ascontiguousarray(np.transpose(frames, (2, 1, 0))), labels


def _frame_sources(seg):
    """``(frame index, source SOPInstanceUID)`` for every source named by a frame's DerivationImageSequence."""
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.SourceImageSequence:
                yield index, str(source.ReferencedSOPInstanceUID)


def _check_frame_sources(seg, seg_path: Path, series: DicomSeries) -> None:
    """Every frame must come from a slice of ``series``: highdicom places frames by the instances it is asked for,
    so a frame whose slice is missing from the folder would be dropped without a word and its label erased."""
    present = set(series.sop_instance_uids)
    outside = {index: uid for index, uid in _frame_sources(seg) if uid not in present}
    if outside:
        raise PipelineError(
            f"{seg_path}: {len(outside)} frames reference instances outside series {series.series_instance_uid} "
            f"({len(series.files)} slices in {series.files[0].parent}): {', '.join(sorted(set(outside.values()))[:5])}"
        )


def _check_frame_positions(seg, seg_path: Path, series: DicomSeries, tolerance_mm: float = 0.01) -> None:
    """Each SEG frame must lie where its source slice lies.

    Many SEGs (dcmqi's among them) leave out SpatialLocationsPreserved, so highdicom cannot vouch for the frame to
    slice mapping; comparing the frames' ImagePositionPatient with the source slices' makes the same guarantee.
    """
    import pydicom

    positions = {}
    for path, uid in zip(series.files, series.sop_instance_uids, strict=False):
        positions[uid] = np.asarray(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient, dtype=float)
    frames = seg.PerFrameFunctionalGroupsSequence
    for index, uid in _frame_sources(seg):
        if "PlanePositionSequence" not in frames[index]:
            continue
        frame_position = np.asarray(frames[index].PlanePositionSequence[0].ImagePositionPatient, dtype=float)
        if np.abs(positions[uid] - frame_position).max() > tolerance_mm:
            raise PipelineError(
                f"{seg_path}: frame {index + 1} lies at {frame_position.tolist()} but its source slice {uid} "
                f"lies at {positions[uid].tolist()}"
            )


class LoadDicomSegd:
    """Dictionary transform: read the DICOM-SEG at ``data[key]`` onto the grid of the already loaded ``image_key``.

    MONAI readers see one path at a time, but a SEG needs its image series to be placed, so this runs after
    ``LoadClinicalImaged`` has loaded the series and takes its folder and affine from the image's metadata.
    """

    def __init__(self, keys: str = "label", image_key: str = "image"):
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.image_key = image_key

    def __call__(self, data: Mapping) -> dict:
        from monai.data import MetaTensor

        d = dict(data)
        image = d[self.image_key]
        # the image was read already, so its series passed (or was allowed past) the gap check
        series = find_dicom_series(
            image.meta["filename_or_obj"], image.meta.get("series_instance_uid"), allow_gaps=True
        )
        for key in self.keys:
            if key not in d:
                continue
            label, _ = read_dicom_seg(d[key], series)
            meta = {k: image.meta[k] for k in ("original_affine", "space", "spatial_shape") if k in image.meta}
            meta["filename_or_obj"] = str(d[key])
            d[key] = MetaTensor(label[None].astype(np.float32), affine=image.affine.clone(), meta=meta)
        return d


def _code(value, where: str):
    """A SNOMED CT code from ``(value, meaning)`` or ``"value:meaning"`` (scheme SCT), or ``"SCHEME:value:meaning"``."""
    from highdicom.sr import CodedConcept

    parts = value.split(":", 2) if isinstance(value, str) else list(value)
    if len(parts) == 2:
        parts = ["SCT", *parts]
    if len(parts) != 3 or not all(str(part).strip() for part in parts):
        raise PipelineError(f"{where}: a code is 'value:meaning' (SNOMED CT) or 'SCHEME:value:meaning', got {value!r}")
    scheme, code, meaning = (str(part).strip() for part in parts)
    return CodedConcept(code, scheme, meaning)


def segment_property(name: str, codes: Mapping | None = None):
    """The segmented property (category, type) of a segment called ``name``, as highdicom codes.

    ``codes`` maps class names to ``{"category": code, "type": code}`` (codes as :func:`_code` reads them) and takes
    precedence; then :data:`SEGMENT_PROPERTIES` by the name or one of its words ("anterior hippocampus"); else
    SNOMED's generic "Tissue", which says nothing about what was segmented.
    """
    given = dict(codes or {}).get(name)
    if given is not None:
        if not isinstance(given, Mapping) or not {"category", "type"} <= set(given):
            raise PipelineError(f"segment codes for {name!r} must be {{'category': ..., 'type': ...}}, got {given!r}")
        where = f"segment codes for {name!r}"
        return _code(given["category"], where), _code(given["type"], where)
    words = str(name).lower().replace("_", " ").replace("-", " ").split()
    key = next((k for k in [" ".join(words), *words] if k in SEGMENT_PROPERTIES), None)
    category, kind = SEGMENT_PROPERTIES.get(key, _TISSUE)
    return _code(category, name), _code(kind, name)


def write_dicom_seg(
    label: np.ndarray,
    series: DicomSeries | str | Path,
    path: str | Path,
    labels: Mapping[int, str] | None = None,
    series_description: str = "pipeline segmentation",
    segment_codes: Mapping | None = None,
) -> Path:
    """Write a label volume ``(x, y, z)`` on ``series``' grid as a BINARY DICOM-SEG with one segment per label value.

    ``labels`` names the segments ``{value: name}``; values present in ``label`` but not named get "label <value>".
    Each segment's SNOMED category and type come from its name (:func:`segment_property`; ``segment_codes``
    overrides).
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    import pipeline

    if not isinstance(series, DicomSeries):
        series = find_dicom_series(series)
    label = np.asarray(label)
    sources = [pydicom.dcmread(f) for f in series.files]
    expected = (int(sources[0].Columns), int(sources[0].Rows), len(sources))
    if label.shape != expected:
        raise PipelineError(
            f"{path}: label shape {label.shape} does not match series {series.series_instance_uid} {expected}"
        )
    values = sorted(int(v) for v in np.unique(label) if v != 0)
    names = dict(labels or {})
    numbers = sorted(set(values) | {int(k) for k in names if int(k) != 0}) or [1]
    if numbers != list(range(1, len(numbers) + 1)):
        raise PipelineError(f"{path}: label values {numbers} must be 1..N for DICOM-SEG segment numbers")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="pipeline", version=pipeline.__version__, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = []
    for n in numbers:
        segment_label = str(names.get(n, names.get(str(n), f"label {n}")))
        category, kind = segment_property(segment_label, segment_codes)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=segment_label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        ))
    extra = {}
    if not str(sources[0].get("SpecificCharacterSet", "") or ""):
        extra["specific_character_set"] = "ISO_IR 100"  # highdicom rejects the empty value some scanners write
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        seg = _segmentation(hd, sources, label, numbers, descriptions, series_description, extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def _segmentation(hd, sources, label, numbers, descriptions, series_description, extra):
    import pipeline

    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.ascontiguousarray(np.transpose(label, (2, 1, 0))).astype(
            np.uint16 if max(numbers) > 255 else np.uint8
        ),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pipeline",
        manufacturer_model_name="pipeline",
        software_versions=pipeline.__version__,
        device_serial_number="0",
        series_description=series_description,
        **extra,
    )
