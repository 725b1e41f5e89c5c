"""MSD-style datalists: build one from a dataset folder, load one with paths resolved against a base folder.

Three layouts are recognised, in this order:

- 3D MSD: ``imagesTr/`` + ``labelsTr/`` (NIfTI/NRRD/MetaImage), paired by file name;
- 2D: ``images/`` + ``masks/`` (PNG/JPG...), paired by file stem;
- DICOM: a tree of series folders with DICOM-SEG files, each SEG paired with the series it references.

Paths are stored relative to the dataset folder so a datalist is portable; :func:`resolve_paths` joins them to a
base folder (as MONAI's ``load_decathlon_datalist(base_dir=...)`` does) and refuses entries whose files are missing,
for datalists (:func:`load_datalist`) and the bundles' split files (:func:`pipeline.engine.cases.load_split`) alike.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.data.formats import IMAGE_2D_SUFFIXES, VOLUME_SUFFIXES, has_suffix, strip_suffix
from pipeline.errors import PipelineError

__all__ = ["build_datalist", "load_datalist", "resolve_paths", "write_json"]

PATH_KEYS = ("image", "label")
"""The entry keys holding file paths (relative to the dataset folder in a datalist or split)."""


def _files(folder: Path, suffixes) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and has_suffix(p, suffixes))


def _pair(image_dir: Path, label_dir: Path, suffixes, root: Path) -> list[dict]:
    images = {strip_suffix(p): p for p in _files(image_dir, suffixes)}
    labels = {strip_suffix(p): p for p in _files(label_dir, suffixes)}
    unpaired = sorted(
        [str(images[k].relative_to(root)) for k in images.keys() - labels.keys()]
        + [str(labels[k].relative_to(root)) for k in labels.keys() - images.keys()]
    )
    if unpaired:
        raise PipelineError(
            f"{root}: {len(unpaired)} unpaired files (image without label or label without image): {unpaired}"
        )
    if not images:
        raise PipelineError(f"{image_dir}: no image files ({', '.join(sorted(suffixes))})")
    return [
        {"image": images[k].relative_to(root).as_posix(), "label": labels[k].relative_to(root).as_posix()}
        for k in sorted(images)
    ]


def _empty_2d(path: Path, binary: bool) -> bool:
    """No foreground: for a binary mask (0/1 or 0/255, checked), nothing above the threshold; else all zero."""
    from PIL import Image

    from pipeline.data.converters import to_grayscale
    from pipeline.data.masks import binary_foreground

    with Image.open(path) as mask:
        values = np.asarray(to_grayscale(mask))
    return not binary_foreground(values, str(path)).any() if binary else not values.any()


def _label_values_3d(path: Path) -> list[int]:
    from pipeline.data.readers import LoadClinicalImaged

    label = LoadClinicalImaged("label")({"label": str(path)})["label"]
    return sorted(int(v) for v in np.unique(label.numpy()))


def _dicom_pairs(root: Path) -> list[dict]:
    import pydicom

    from pipeline.data.dicom_seg import referenced_series_uid
    from pipeline.data.readers import is_dicom

    series_dirs: dict[str, Path] = {}
    segs: list[Path] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and is_dicom(p)):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SeriesInstanceUID"])
        except Exception as error:
            raise PipelineError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error})") from error
        if str(header.get("Modality", "")).upper() == "SEG":
            segs.append(path)
        else:
            series_dirs.setdefault(str(header.SeriesInstanceUID), path.parent)
    entries, used = [], set()
    unpaired = []
    for seg in segs:
        uid = referenced_series_uid(seg)
        if uid in series_dirs:
            entries.append(
                {"image": series_dirs[uid].relative_to(root).as_posix(), "label": seg.relative_to(root).as_posix()}
            )
            used.add(uid)
        else:
            unpaired.append(f"{seg.relative_to(root)} (references absent series {uid})")
    unpaired += [
        f"{d.relative_to(root)} (series {uid} has no SEG)" for uid, d in series_dirs.items() if uid not in used
    ]
    if unpaired:
        raise PipelineError(f"{root}: {len(unpaired)} unpaired DICOM objects: {sorted(unpaired)}")
    if not entries:
        raise PipelineError(f"{root}: no DICOM series with a DICOM-SEG found")
    return entries


def build_datalist(
    folder: str | Path, name: str | None = None, labels: dict | None = None, modality: str | None = None
) -> dict:
    """MSD-style datalist for ``folder``: ``name``, ``modality``, ``labels``, ``training``, ``summary``.

    The summary counts cases and lists empty masks (allowed: a frame without polyp is a valid example). 2D masks
    declared binary (two ``labels``, the default) must be 0/1 or 0/255 (JPEG noise allowed); any other mask stops here.
    """
    root = Path(folder)
    if not root.is_dir():
        raise PipelineError(f"{root}: dataset folder does not exist")
    empty: list[str] = []
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        layout, default_modality = "msd-3d", "MRI"
        entries = _pair(root / "imagesTr", root / "labelsTr", VOLUME_SUFFIXES, root)
        values = set()
        for entry in entries:
            found = _label_values_3d(root / entry["label"])
            values.update(found)
            if found == [0]:
                empty.append(entry["label"])
        default_labels = {str(v): ("background" if v == 0 else f"label {v}") for v in sorted(values | {0})}
    elif (root / "images").is_dir() and (root / "masks").is_dir():
        layout, default_modality = "2d", "RGB"
        entries = _pair(root / "images", root / "masks", IMAGE_2D_SUFFIXES, root)
        default_labels = {"0": "background", "1": "foreground"}
        binary = len(labels or default_labels) == 2
        empty = [e["label"] for e in entries if _empty_2d(root / e["label"], binary)]
    else:
        layout, default_modality = "dicom", "DICOM"
        entries = _dicom_pairs(root)
        default_labels = {"0": "background", "1": "foreground"}
    return {
        "name": name or root.name,
        "modality": modality or default_modality,
        "labels": {str(k): v for k, v in (labels or default_labels).items()},
        "layout": layout,
        "numTraining": len(entries),
        "training": entries,
        "summary": {"cases": len(entries), "empty_masks": len(empty), "empty_mask_files": empty},
    }


def write_json(data: dict, path: str | Path) -> Path:
    """Write JSON the same way every time (sorted nothing, fixed indent, trailing newline) so reruns are
    byte-identical."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load_datalist(path: str | Path, key: str = "training", base_dir: str | Path | None = None) -> list[dict]:
    """Entries of ``key`` with ``image``/``label`` paths made absolute against ``base_dir``.

    ``base_dir`` defaults to the datalist's folder; split files live elsewhere, so pass the dataset folder for them.
    Every referenced file must exist; the error names the first missing ones.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise PipelineError(f"{path}: datalist not found") from error
    except json.JSONDecodeError as error:
        raise PipelineError(f"{path}: not valid JSON ({error})") from error
    if key not in data:
        raise PipelineError(f"{path}: has no '{key}' list (keys: {sorted(data)})")
    return resolve_paths(data[key], base_dir if base_dir is not None else path.parent, f"{path} ('{key}')")


def resolve_paths(entries: list[dict], base_dir: str | Path, source: str) -> list[dict]:
    """``entries`` with their ``image`` and ``label`` paths joined to ``base_dir`` as MONAI's
    ``load_decathlon_datalist`` joins them: ``os.path.normpath(os.path.join(base_dir, path))``, so absolute paths
    stay as they are, and a list of paths is joined path by path.

    Every file must exist: a missing image would otherwise surface epochs later as a reader error deep inside a
    data loader. The error names ``source`` (the datalist or split) and the first missing entries.
    """
    resolved, missing = [], []
    for entry in entries:
        joined = dict(entry)
        for key in PATH_KEYS:
            value = entry.get(key)
            if not isinstance(value, (str, list)):
                continue
            given = [value] if isinstance(value, str) else value
            paths = [os.path.normpath(os.path.join(base_dir, path)) for path in given]
            missing += [(key, path) for path, full in zip(given, paths, strict=True) if not os.path.exists(full)]
            joined[key] = paths[0] if isinstance(value, str) else paths
        resolved.append(joined)
    if missing:
        (key, first), more = missing[0], [p for _, p in missing[1:6]]
        also = f" (and {len(missing) - 1} more: {more})" if more else ""
        raise PipelineError(f"{source} names {key} {first!r}, which does not exist under {base_dir}{also}")
    return resolved
