"""The cases a bundle trains, validates and tests on, from ``dataset_dir`` and an optional split file.

A split file is MSD-style JSON with ``training`` / ``validation`` / ``test`` lists of ``{"image": ..., "label": ...}``
whose paths are relative to the dataset folder (absolute paths also work). Without one, the folder is listed and
split reproducibly by :func:`pipeline.data.splits.make_splits` (seed 0, all remaining cases for training, 20 % test,
20 % of the rest for validation), so train, evaluate and inference agree on which cases are held out without passing
a file around. That is not the split ``python -m pipeline split`` writes by default: its ``--val-fraction`` defaults
to 0.0 (no validation cases); ``--fractions 1.0 --val-fraction 0.2`` writes this one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.data.datalist import build_datalist, resolve_paths, write_json
from pipeline.data.formats import IMAGE_SUFFIXES, has_suffix
from pipeline.errors import PipelineError

PARTS = ("training", "validation", "test")


def _read_split(split: str | Path) -> dict:
    path = Path(split)
    if not path.is_file():
        raise PipelineError(f"split file {path} does not exist (--split)")
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PipelineError(f"split file {path} is not valid JSON ({error})") from None
    if not isinstance(payload, dict) or not any(part in payload for part in PARTS):
        raise PipelineError(f"split file {path} has none of the keys {', '.join(PARTS)}")
    return payload


def _default_split(dataset_dir: Path) -> dict:
    from pipeline.data.splits import make_splits

    splits = make_splits(build_datalist(dataset_dir), seeds=[0], fractions=[1.0], test_fraction=0.2, val_fraction=0.2)
    return next(iter(splits.values()))


def load_split(dataset_dir: str | Path, split: str | Path | None = None) -> dict[str, list[dict]]:
    """``{"training": [...], "validation": [...], "test": [...]}`` with absolute, checked paths."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise PipelineError(f"dataset_dir {root} is not a folder")
    payload = _read_split(split) if split else _default_split(root)
    source = f"split file {split}" if split else f"the default split of {root}"
    resolved = {part: resolve_paths(payload.get(part, []), root, source) for part in PARTS}
    _check_disjoint(resolved, payload, source)
    return resolved


def _check_disjoint(resolved: dict[str, list[dict]], payload: dict, source: str) -> None:
    """Test cases that are also trained or validated on would make the test scores say nothing about new cases."""
    def key(item: dict) -> str:
        return str(Path(item["image"]).resolve())

    seen = {key(item) for part in ("training", "validation") for item in resolved[part]}
    shared = sorted(
        str(raw["image"])
        for raw, item in zip(payload.get("test", []), resolved["test"], strict=False)
        if key(item) in seen
    )
    if shared:
        raise PipelineError(f"{source}: {len(shared)} test cases are also in training or validation: {shared[:10]}")


def held_out(split: dict[str, list[dict]]) -> list[dict]:
    """The cases to evaluate on: the test part, or the validation part when the split has no test cases."""
    cases = split["test"] or split["validation"]
    if not cases:
        raise PipelineError("the split has neither test nor validation cases to evaluate on")
    return cases


def save_split(split: dict[str, list[dict]], path: str | Path) -> str:
    """Write the split a run used next to its outputs, so evaluate/inference and a later reader can reuse it."""
    return str(write_json(split, path))


def inference_inputs(input: str | Path | None = None, dataset_dir: str | Path | None = None,
                     split: str | Path | None = None, box=None, prompts: str | Path | None = None,
                     prompt: str = "none", whole_image_box: bool = False, box_class: str | int | None = None,
                     class_names: list[str] | None = None) -> list[dict]:
    """What inference runs on: ``input`` (an image file, a DICOM series folder, or a folder of image files), else
    the held-out cases of the dataset (their labels then give the box prompts, standing in for a user's boxes).

    Each case carries the distinct stem its outputs are written under (``case1.png`` and ``case1.jpg`` would both
    be ``case1``), so no prediction overwrites another. Under ``prompt == "box"`` each case also carries the user's
    boxes (``prompt_boxes``, original pixel coordinates) from ``box`` (one input only) or the ``prompts`` file,
    and their class indices (``prompt_classes``) from ``box_class`` or the file, checked against the model's
    ``class_names`` (:func:`pipeline.engine.prompts.box_classes`; ``None``: a model that takes no box class);
    a case with neither boxes nor a label stops here, unless ``whole_image_box`` asks for the whole image as its box.
    """
    from pipeline.engine.inference import OUTPUT_NAME, case_names
    from pipeline.engine.prompts import BOX_HINT, box_classes, parse_box, read_prompts
    from pipeline.options import flag

    cases = _inference_cases(input, dataset_dir, split)
    names = case_names([case["image"] for case in cases])
    cases = [{**case, OUTPUT_NAME: name} for case, name in zip(cases, names, strict=False)]
    given = box not in (None, "") or prompts not in (None, "")
    if prompt != "box":
        if given:
            raise PipelineError(f"this model is not box-prompted (prompt {prompt!r}): drop --box / --prompts")
        return cases
    if box_class not in (None, "") and box in (None, ""):
        raise PipelineError("--box_class is the class of the one --box; a prompts file gives classes in its own "
                            "class column (key)")
    if box not in (None, ""):
        if prompts not in (None, "") or len(cases) != 1:
            raise PipelineError(f"--box gives the box of one input image, but there are {len(cases)} inputs"
                                if len(cases) != 1 else "give --box or --prompts, not both")
        klass = None if box_class in (None, "") else str(box_class)
        user_boxes = {0: ([parse_box(box)], [klass], "--box")}
    elif prompts not in (None, ""):
        table = read_prompts(prompts)
        user_boxes = {index: (*found, f"{prompts}, {case['image']}") for index, case in enumerate(cases)
                      if (found := table.of(case["image"]))}
    else:
        user_boxes = {}
    for index, (boxes, classes, source) in user_boxes.items():
        cases[index]["prompt_boxes"] = boxes
        indices = box_classes(classes, class_names, source)
        if class_names is not None:  # only a model with box classes has a transform that reads them
            cases[index]["prompt_classes"] = indices
    missing = [case["image"] for case in cases if "prompt_boxes" not in case and "label" not in case]
    if missing and not flag("whole_image_box", whole_image_box):
        where = f"{missing[0]}" + (f" (and {len(missing) - 1} more inputs)" if len(missing) > 1 else "")
        raise PipelineError(f"{where}: this model is box-prompted and has no box for it: pass {BOX_HINT}, "
                            "or --whole_image_box true to prompt with the whole image")
    return cases


def _inference_cases(input, dataset_dir, split) -> list[dict]:
    if input in (None, ""):
        if dataset_dir in (None, ""):
            raise PipelineError("inference needs --input PATH (an image, a DICOM series folder or a folder of images) "
                                "or --dataset_dir DIR (its held-out cases)")
        return held_out(load_split(dataset_dir, split))
    path = Path(input)
    if not path.exists():
        raise PipelineError(f"input {path} does not exist (--input)")
    if path.is_file():
        return [{"image": str(path)}]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if has_suffix(p, IMAGE_SUFFIXES)]
    if images:
        return [{"image": str(p)} for p in images]
    return [{"image": str(path)}]
