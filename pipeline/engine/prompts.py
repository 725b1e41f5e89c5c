"""Box prompts for box-prompted models, taken from label maps as MedSAM trains and evaluates them.

In MONAI's style there is a function on tensors (:func:`boxes_from_labels`), an array transform on one label
(:class:`PromptBox`) and the dictionary transform the bundles list (:class:`PromptBoxd`). Boxes are
``(x0, y0, x1, y1)`` in pixel coordinates of the image they were taken from, inclusive.

During training MedSAM widens the label's tight bounding box by a random 0..``jitter`` pixels on each side, so the
model learns to tolerate the loose boxes a person draws; at evaluation the tight box (``jitter=0``) stands in for
the box a clinician would draw. Two things in real labels break a single tight box: lossy masks carry isolated noise
pixels (one stray Kvasir-SEG pixel at a corner turns a polyp's box into half the image), and a label can hold
several separate objects. So connected components smaller than ``min_pixels`` are dropped before boxing, and
``per_object=True`` gives one box per remaining component (MedSAM's protocol for multi-object images;
:class:`pipeline.engine.inferers.ObjectBoxInferer` unites the per-box predictions). An empty label gives no box at
all: that stops the run naming the label's file (empty masks are fine for prompt-free runs). Prompt-free models get
no box key at all, so the same transform list serves both prompt modes.

A new case has no label, so its user gives the boxes, as in MedSAM: ``(x0, y0, x1, y1)`` in pixel coordinates of the
ORIGINAL image (x the column, y the row, inclusive), ``--box`` for one image or ``--prompts FILE`` per input
(:func:`read_prompts`). They must reach the model through exactly the resizing, padding and axis swap the image
takes, so :class:`BoxMaskd` draws each box as a filled rectangle in its own channel of a ``box_mask`` on the loaded
image's grid; the bundle's resizing chain carries that mask along with the image (nearest interpolation), and
:class:`PromptBoxd` takes the tight box of each channel on the model's grid. The whole image as the box (a mask over
97.8 % of a Kvasir frame, Dice 0.23) is used only when asked for (``whole_image=True``).

A box-prompted model segments whatever its box holds, so a box alone cannot say which of a multi-class model's
classes (hippocampus: anterior, posterior) its mask is. Labelling every user box as class 1 would write a posterior
hippocampus into the output as "anterior" without a word; so each box of such a model names its class
(``--box_class``, a ``class`` column or key in the prompts file), and :func:`box_classes` stops a run that leaves one
out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, Transform
from scipy import ndimage

from pipeline.data.formats import strip_suffix
from pipeline.errors import PipelineError
from pipeline.options import flag

__all__ = ["BoxMaskd", "PromptBox", "PromptBoxd", "Prompts", "RandClassMaskd", "VolumeBoxesd", "box_classes",
           "boxes_from_labels", "object_masks", "parse_box", "read_prompts", "volume_box"]

BOX_HINT = ("--box x0,y0,x1,y1 (pixel coordinates of the original image, x = column, y = row; for a volume "
            "x0,y0,z0,x1,y1,z1 in voxel indices, z = slice) or --prompts FILE (JSON or CSV of boxes per input file)")
"""How a user gives boxes; every error about a missing or bad box ends with it."""


def boxes_from_labels(labels: torch.Tensor, jitter: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One box per image around the foreground (label > 0) of ``labels`` ``(B, [1,] H, W)``: a ``(B, 4)`` float tensor.

    Each side is moved outwards by a random integer in ``[0, jitter]`` and clipped to the image. An image
    without foreground has no box to give, which is an error: drop such slices before box-prompted training.
    """
    if labels.dim() == 4:
        if labels.shape[1] != 1:
            raise PipelineError(f"labels for box prompts must have one channel, got shape {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 3:
        raise PipelineError(f"labels for box prompts must be (B, [1,] H, W), got shape {tuple(labels.shape)}")
    height, width = labels.shape[-2:]
    boxes = []
    for index, label in enumerate(labels):
        rows = torch.nonzero(label.gt(0).any(dim=1)).flatten()
        cols = torch.nonzero(label.gt(0).any(dim=0)).flatten()
        if rows.numel() == 0:
            raise PipelineError(f"label {index} of the batch has no foreground, so it gives no box prompt")
        box = torch.stack([cols[0], rows[0], cols[-1], rows[-1]]).float()
        if jitter > 0:
            shift = torch.randint(0, jitter + 1, (4,), generator=generator).float()
            box = box + shift * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        limit = torch.tensor([width - 1.0, height - 1.0, width - 1.0, height - 1.0])
        boxes.append(torch.minimum(box.clamp(min=0.0), limit))
    return torch.stack(boxes).to(labels.device)


def object_masks(label: torch.Tensor, min_pixels: int = 0) -> list[np.ndarray]:
    """The connected foreground components of a 2D ``label`` ``(1, H, W)`` with at least ``min_pixels`` pixels.

    When every component is smaller than that, all of them are kept: a tiny object is still an object.
    """
    foreground = np.asarray(torch.as_tensor(label).detach().cpu())[0] > 0
    components, count = ndimage.label(foreground)
    masks = [components == index for index in range(1, count + 1)]
    kept = [mask for mask in masks if mask.sum() >= min_pixels]
    return kept or masks


class PromptBox(Randomizable, Transform):
    """The box prompt of one 2D label ``(1, H, W)``: ``(4,)`` around all components of at least ``min_pixels``
    pixels, or ``(K, 4)`` with ``per_object=True`` (one per component), each side widened by 0..``jitter``."""

    def __init__(self, jitter: int = 0, min_pixels: int = 0, per_object: bool = False) -> None:
        self.jitter, self.min_pixels, self.per_object = jitter, min_pixels, per_object
        self._seed = 0

    def randomize(self, data: None = None) -> None:
        self._seed = int(self.R.randint(0, np.iinfo(np.int32).max))

    def __call__(self, label: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        if randomize:
            self.randomize()
        objects = object_masks(label, self.min_pixels)
        if not objects:
            name = (getattr(label, "meta", None) or {}).get("filename_or_obj", "a label")
            raise PipelineError(f"{name}: the label is empty, so no box prompt can be drawn from it; leave the "
                                "case out of box-prompted runs or use prompt none (empty labels are allowed there)")
        masks = torch.from_numpy(np.stack(objects))
        if not self.per_object:
            masks = masks.any(dim=0, keepdim=True)
        boxes = boxes_from_labels(masks, self.jitter, torch.Generator().manual_seed(self._seed))
        return boxes if self.per_object else boxes[0]


class PromptBoxd(Randomizable, MapTransform):
    """Put a box ``(x0, y0, x1, y1)`` under ``box_key`` when ``prompt == "box"``; otherwise pass through.

    The box comes from the user's boxes when the item has ``mask_key`` (:class:`BoxMaskd`, one tight box per
    channel, never jittered: a person drew it), else from the label ``keys`` (:class:`PromptBox`), else, only with
    ``whole_image=True``, from the extent of ``image_key``; an item with none of them stops the run.
    """

    def __init__(self, keys: str = "label", prompt: str = "box", image_key: str = "image", box_key: str = "box",
                 jitter: int = 0, min_pixels: int = 0, per_object: bool = False, mask_key: str = "box_mask",
                 whole_image: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.prompt, self.image_key, self.box_key, self.mask_key = prompt, image_key, box_key, mask_key
        self.whole_image = flag("whole_image_box", whole_image)
        self.prompter = PromptBox(jitter, min_pixels, per_object)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> PromptBoxd:
        super().set_random_state(seed, state)
        self.prompter.set_random_state(seed, state)
        return self

    def randomize(self, data: None = None) -> None:
        self.prompter.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if self.prompt != "box":
            return out
        self.randomize()  # drawn for label-less items too, so a dataset's box sequence does not depend on them
        labels = [out[key] for key in self.key_iterator(out)]
        if self.mask_key in out:
            masks = torch.as_tensor(out.pop(self.mask_key))
            lost = [k for k, mask in enumerate(masks) if not bool(mask.any())]
            if lost:
                name = (getattr(out[self.image_key], "meta", None) or {}).get("filename_or_obj", "an image")
                raise PipelineError(f"{name}: box {lost[0] + 1} is narrower than one pixel of the model's input once "
                                    "the image is resized; draw it larger")
            boxes = boxes_from_labels(masks)
            out[self.box_key] = boxes if self.prompter.per_object or len(boxes) > 1 else boxes[0]
        elif labels:
            out[self.box_key] = self.prompter(labels[0], randomize=False)
        elif self.whole_image:
            height, width = out[self.image_key].shape[-2:]
            box = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
            out[self.box_key] = box[None] if self.prompter.per_object else box
        else:
            name = (getattr(out[self.image_key], "meta", None) or {}).get("filename_or_obj", "an image")
            raise PipelineError(f"{name}: this model is box-prompted and the image has no label to take a box from; "
                                f"pass {BOX_HINT}, or --whole_image_box true to prompt with the whole image")
        return out


def parse_box(value, source: str = "--box") -> list[float]:
    """One box ``x0,y0,x1,y1`` (2D) or ``x0,y0,z0,x1,y1,z1`` (3D, MedSAM's order) -- a string, or the tuple/list
    ``fire`` makes of it -- as 4 or 6 non-negative numbers, each low corner <= its high corner; anything else is an
    error naming ``source``. Whether the image has as many axes as the box is checked against the image
    (:class:`BoxMaskd`)."""
    words = value.replace(",", " ").split() if isinstance(value, str) else value
    try:
        box = [float(word) for word in words]
    except (TypeError, ValueError):
        box = []
    half = len(box) // 2
    if (len(box) not in (4, 6) or not all(np.isfinite(box)) or min(box) < 0
            or any(box[axis] > box[half + axis] for axis in range(half))):
        raise PipelineError(f"{source}: a box is x0,y0,x1,y1 (2D) or x0,y0,z0,x1,y1,z1 (3D) in pixel/voxel "
                            f"coordinates with each low corner <= its high corner, all >= 0, got {value!r}")
    return box


def _boxes_of(entry, source: str) -> list[tuple[list[float], str | None]]:
    """The ``(box, class)`` pairs of one prompts-file entry: a box, ``{"box": box, "class": name}``, a list of
    those, or Kvasir-SEG's ``{"bbox": [{"xmin": ...}]}``; ``class`` is ``None`` where the entry names none."""
    if isinstance(entry, dict) and "bbox" in entry:
        entry = [[b.get("xmin"), b.get("ymin"), b.get("xmax"), b.get("ymax")] for b in entry["bbox"]]
    if not (isinstance(entry, (list, tuple)) and entry and all(isinstance(b, (list, tuple, dict)) for b in entry)):
        entry = [entry]
    pairs = []
    for item in entry:
        klass = None
        if isinstance(item, dict) and "box" in item:
            klass = None if item.get("class") is None else str(item["class"])
            item = item["box"]
        elif isinstance(item, dict):
            item = [item.get(k) for k in ("x0", "y0", "x1", "y1")]
        pairs.append((parse_box(item, source), klass))
    return pairs


@dataclass(frozen=True)
class Prompts:
    """A prompts file as read: each input's boxes, and the class the file names for each box (``None`` where it
    names none), both keyed as the file names the inputs."""

    boxes: dict[str, list[list[float]]]
    classes: dict[str, list[str | None]]

    def of(self, image: str | Path) -> tuple[list[list[float]], list[str | None]] | None:
        """The boxes and classes given for the input ``image``: keyed by its path as given, its absolute path, its
        file name or its stem (``case`` for ``case.nii.gz`` too); ``None`` when it has none."""
        image = Path(image)
        for key in (str(image), str(image.resolve()), image.name, strip_suffix(image)):
            if key in self.boxes:
                return self.boxes[key], self.classes[key]
        key = self._resolved_keys.get(str(image.resolve()))
        return None if key is None else (self.boxes[key], self.classes[key])

    @cached_property
    def _resolved_keys(self) -> dict[str, str]:
        """The file's keys by absolute path, resolved once for all inputs (each resolution touches the disk)."""
        return {str(Path(key).resolve()): key for key in self.boxes}


def read_prompts(path: str | Path) -> Prompts:
    """The boxes (and their classes) a prompts file gives each input.

    JSON: ``{"frame.jpg": [x0, y0, x1, y1]}`` or a list of boxes per input (Kvasir-SEG's ``kavsir_bboxes.json``
    layout is read too); a volume's boxes have six numbers, ``[x0, y0, z0, x1, y1, z1]``; a box with its class is
    ``{"box": [...], "class": "posterior"}``. CSV: a header ``image,x0,y0,x1,y1`` (``image,x0,y0,z0,x1,y1,z1``),
    optionally a ``class`` column, and one row per box. An input is matched by its path, its file name or its stem
    (:meth:`Prompts.of`).
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"prompts file {path} does not exist (--prompts)")
    source = f"prompts file {path}"
    boxes: dict[str, list[list[float]]] = {}
    classes: dict[str, list[str | None]] = {}
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as stream:
            rows = list(csv.DictReader(stream))
        planar, volumetric = ("image", "x0", "y0", "x1", "y1"), ("image", "x0", "y0", "z0", "x1", "y1", "z1")
        columns = volumetric if rows and set(volumetric) <= set(rows[0]) else planar
        if not rows or not set(columns) <= set(rows[0]):
            raise PipelineError(f"{source}: a CSV needs a header {','.join(planar)} (or {','.join(volumetric)} for "
                                "volumes), optionally a class column, and one row per box")
        for number, row in enumerate(rows, start=2):
            boxes.setdefault(row["image"], []).append(parse_box([row[k] for k in columns[1:]],
                                                                f"{source}, line {number}"))
            classes.setdefault(row["image"], []).append((row.get("class") or "").strip() or None)
        return Prompts(boxes, classes)
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PipelineError(f"{source} is neither valid JSON ({error}) nor a .csv file") from None
    if not isinstance(payload, dict):
        raise PipelineError(f"{source}: JSON must map each input file to its box or boxes")
    for key, entry in payload.items():
        pairs = _boxes_of(entry, f"{source}, entry {key!r}")
        boxes[str(key)], classes[str(key)] = [box for box, _ in pairs], [klass for _, klass in pairs]
    return Prompts(boxes, classes)


def box_classes(given: list[str | None], class_names: list[str] | None, source: str) -> list[int]:
    """The class index (1..C) of each user box of a model with foreground ``class_names``, from a class name or
    number the user gave for it.

    A single-class model's boxes are class 1 whether named or not. A multi-class model's box without a class
    stops the run: its mask would otherwise be written as class 1 whatever it is. ``class_names`` ``None`` is a
    model without classes for boxes (the 2D bundles), which takes no class at all.
    """
    if class_names is None:
        if any(klass is not None for klass in given):
            raise PipelineError(f"{source}: this model takes no class for its boxes; drop --box_class / the class "
                                "column")
        return [1] * len(given)
    names = [str(name) for name in class_names]
    indices = []
    for klass in given:
        if klass is None:
            if len(names) > 1:
                raise PipelineError(f"{source}: this model segments {len(names)} classes ({', '.join(names)}), so "
                                    "each box needs its class: --box_class NAME, or a class column (key) in --prompts")
            indices.append(1)
        elif klass in names:
            indices.append(names.index(klass) + 1)
        elif klass.isdigit() and 1 <= int(klass) <= len(names):
            indices.append(int(klass))
        else:
            raise PipelineError(f"{source}: box class {klass!r} is not one of this model's classes "
                                f"({', '.join(names)}, or their numbers 1..{len(names)})")
    return indices


class BoxMaskd(MapTransform):
    """Draw the user's boxes ``data[keys]`` (``(K, 4)``, or ``(K, 6)`` for a volume, in pixel/voxel coordinates of
    the loaded image: x on its first spatial axis, y on its second, z on its third, MONAI's reader convention) as
    a ``(K, *spatial)`` mask under ``mask_key``.

    Each box gets its own channel, so overlapping boxes stay separate objects; the bundle's resizing chain (or the
    slice bundle's axis layout) then moves the mask exactly as it moves the image, and :class:`PromptBoxd` /
    :class:`VolumeBoxesd` read the boxes back on the model's grid.
    """

    def __init__(self, keys: str = "prompt_boxes", image_key: str = "image", mask_key: str = "box_mask") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key, self.mask_key = image_key, mask_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        for key in self.key_iterator(out):
            image = out[self.image_key]
            extent = tuple(image.shape[1:])
            name = (getattr(image, "meta", None) or {}).get("filename_or_obj", "the image")
            given = [list(box) for box in out[key]]
            if any(len(box) != 2 * len(extent) for box in given):
                wanted = "x0,y0,x1,y1" if len(extent) == 2 else "x0,y0,z0,x1,y1,z1"
                raise PipelineError(f"{name} has {len(extent)} spatial axes, so its boxes are {wanted}; got {given}")
            boxes = torch.as_tensor(given, dtype=torch.float32).reshape(-1, 2 * len(extent))
            mask = torch.zeros((len(boxes), *extent), dtype=torch.float32)
            for index, box in enumerate(boxes.round().long().tolist()):
                low, high = box[: len(extent)], box[len(extent) :]
                if any(start >= size for start, size in zip(low, extent, strict=True)):
                    size = "x".join(str(n) for n in extent)
                    raise PipelineError(f"{name}: box {box} lies outside the {size} image (each low corner must be "
                                        "inside it; pixel/voxel coordinates of the original image)")
                # a side past the border (Kvasir's x1 = width) is cut
                mask[(index, *(slice(a, b + 1) for a, b in zip(low, high, strict=True)))] = 1.0
            out[self.mask_key], out[key] = mask, boxes
        return out


NO_CLASS = -1.0
"""The class column of a :class:`VolumeBoxesd` row that prompts nothing (kept so rows stack into one tensor)."""


def volume_box(mask: torch.Tensor) -> list[float]:
    """``[x0, y0, z0, x1, y1, z1]`` around the non-zero voxels of a ``(rows, columns, slices)`` ``mask`` in the
    slice bundle's layout (:func:`pipeline.data.slices.slice_layout`): x along the columns, y down the rows, z the
    slice index, inclusive -- the 2D box convention of every slice plus the slices it spans."""
    extents = []
    for axis in (1, 0, 2):
        others = tuple(a for a in range(3) if a != axis)
        present = torch.nonzero(mask.amax(dim=others) > 0).flatten()
        extents.append((float(present[0]), float(present[-1])))
    (x0, x1), (y0, y1), (z0, z1) = extents
    return [x0, y0, z0, x1, y1, z1]


class VolumeBoxesd(MapTransform):
    """The 3D box prompts of a volume in the slice bundle's layout: ``box_key`` gets a ``(N, 7)`` tensor of rows
    ``[class, x0, y0, z0, x1, y1, z1]`` when ``prompt == "box"``; otherwise the item passes through.

    From the user's boxes (``mask_key``, :class:`BoxMaskd`), each prompting its class from ``class_key``
    (:func:`box_classes`; class 1 without one), else one box per
    foreground class present in the label ``keys`` (MedSAM's evaluation protocol: the tight 3D box of each class
    stands in for the box a clinician would draw; an absent class gets no box, so it is predicted nowhere), else,
    only with ``whole_image=True``, the whole volume as a class-1 box. A volume with none of them stops the run.
    """

    def __init__(self, keys: str = "label", num_classes: int = 2, prompt: str = "box", image_key: str = "image",
                 box_key: str = "box", mask_key: str = "box_mask", class_key: str = "prompt_classes",
                 whole_image: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.num_classes, self.prompt, self.image_key = num_classes, prompt, image_key
        self.box_key, self.mask_key, self.class_key = box_key, mask_key, class_key
        self.whole_image = flag("whole_image_box", whole_image)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if self.prompt != "box":
            return out
        name = (getattr(out[self.image_key], "meta", None) or {}).get("filename_or_obj", "a volume")
        labels = [out[key] for key in self.key_iterator(out)]
        if self.mask_key in out:
            masks = torch.as_tensor(out.pop(self.mask_key))
            classes = out.pop(self.class_key, None) or [1] * len(masks)
            rows = [[float(klass), *volume_box(mask)] for klass, mask in zip(classes, masks, strict=True)]
        elif labels:
            label = torch.as_tensor(labels[0])[0]
            rows = [[float(c), *volume_box(label == c)] for c in range(1, self.num_classes) if bool((label == c).any())]
            rows = rows or [[NO_CLASS] + [0.0] * 6]  # an empty label: every voxel is background
        elif self.whole_image:
            depth_rows, columns, slices = out[self.image_key].shape[1:]
            rows = [[1.0, 0.0, 0.0, 0.0, columns - 1.0, depth_rows - 1.0, slices - 1.0]]
        else:
            raise PipelineError(f"{name}: this model is box-prompted and the volume has no label to take a box from; "
                                f"pass {BOX_HINT}, or --whole_image_box true to prompt with the whole volume")
        out[self.box_key] = torch.tensor(rows, dtype=torch.float32)
        return out


class RandClassMaskd(Randomizable, MapTransform):
    """Turn a multi-class 2D label ``keys`` into the binary mask of one class present in it, drawn at random.

    A box-prompted SAM model segments the one object in its box, so box-prompted training on a multi-class label
    (MSD hippocampus: anterior and posterior) needs a single object per slice; MedSAM trains on one object per
    prompt the same way. A label without foreground, or any label when ``prompt`` is not ``"box"``, passes
    through unchanged.
    """

    def __init__(self, keys: str = "label", prompt: str = "box") -> None:
        MapTransform.__init__(self, keys, allow_missing_keys=True)
        self.prompt = prompt
        self._draw = 0.0

    def randomize(self, data: None = None) -> None:
        self._draw = float(self.R.random_sample())

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        out = dict(data)
        if self.prompt != "box":
            return out
        self.randomize()
        for key in self.key_iterator(out):
            present = [value for value in torch.unique(torch.as_tensor(out[key])).tolist() if value > 0]
            if present:
                chosen = present[min(int(self._draw * len(present)), len(present) - 1)]
                out[key] = (out[key] == chosen).to(out[key].dtype)
        return out
