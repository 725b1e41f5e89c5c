"""Per-case segmentation metrics with MONAI: Dice, IoU, HD95 (in mm, from the image spacing) and NSD per class.

:class:`CaseMetrics` is an evaluator handler: it scores every case at its original geometry (after ``Invertd``)
and, when evaluation completes, writes ``metrics.csv`` (one row per case and class) and ``summary.json`` (mean,
standard deviation and 95 % confidence interval of the mean per metric and class). HD95 is undefined (NaN) when a
prediction or reference is empty; such values are written as NaN and left out of the summary, which counts them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric
from monai.networks.utils import one_hot
from scipy import stats

from pipeline.engine.distributed import is_main_process

METRICS = ("dice", "iou", "hd95", "nsd")


def _spacing(label: torch.Tensor, spatial_dims: int) -> list[float]:
    pixdim = getattr(label, "pixdim", None)
    if pixdim is None:
        return [1.0] * spatial_dims
    return [float(s) for s in torch.as_tensor(pixdim).flatten()[:spatial_dims]]


def _case_id(item: dict, key: str) -> str:
    meta = getattr(item.get(key), "meta", {}) or {}
    name = meta.get("filename_or_obj", "")
    return str(name) if name else f"case{id(item)}"


def score_case(pred: torch.Tensor, label: torch.Tensor, num_classes: int, nsd_tolerance: float = 2.0,
               spacing: list[float] | None = None) -> dict[str, list[float]]:
    """Scores of one case per foreground class; ``pred``/``label`` are ``(1, *spatial)`` label maps."""
    spatial_dims = pred.dim() - 1
    spacing = spacing or _spacing(label, spatial_dims)
    p = one_hot(torch.as_tensor(pred)[None].long(), num_classes)
    y = one_hot(torch.as_tensor(label)[None].long(), num_classes)
    foreground = num_classes - 1
    scores = {
        "dice": DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, y),
        "iou": MeanIoU(include_background=False, reduction="none", ignore_empty=False)(p, y),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, y, spacing=spacing
        ),
        "nsd": SurfaceDiceMetric([nsd_tolerance] * foreground, include_background=False, reduction="none")(
            p, y, spacing=spacing
        ),
    }
    return {name: [float(v) for v in value.flatten()] for name, value in scores.items()}


def summarise(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and t-based 95 % CI of the finite ``values``; ``non_finite`` counts the rest."""
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    summary: dict[str, float | int | None] = {"n": int(finite.size), "non_finite": int(array.size - finite.size)}
    if finite.size == 0:
        return {**summary, "mean": None, "std": None, "ci95": None}
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    half = float(stats.t.ppf(0.975, finite.size - 1) * std / math.sqrt(finite.size)) if finite.size > 1 else 0.0
    return {**summary, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


class CaseMetrics:
    """Score each evaluated case and write ``metrics.csv`` + ``summary.json`` to ``output_dir`` at the end.

    ``class_names`` names the foreground classes (labels 1..C-1) in the outputs; ``nsd_tolerance`` is in mm.
    """

    def __init__(self, output_dir: str, num_classes: int, class_names: list[str] | None = None,
                 nsd_tolerance: float = 2.0, pred_key: str = "pred", label_key: str = "label") -> None:
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(c) for c in range(1, num_classes)])
        self.nsd_tolerance = nsd_tolerance
        self.pred_key, self.label_key = pred_key, label_key
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        for batch, output in zip(engine.state.batch, engine.state.output):
            item = {**batch, **output}
            pred, label = item[self.pred_key], item[self.label_key]
            if pred.shape[0] > 1:
                pred = pred.argmax(0, keepdim=True)
            scores = score_case(pred.cpu(), label.cpu(), self.num_classes, self.nsd_tolerance,
                                _spacing(label, label.dim() - 1))
            case = _case_id(item, self.label_key)
            for index, name in enumerate(self.class_names):
                self.rows.append({"case": case, "class": name, **{m: scores[m][index] for m in METRICS}})

    def summary(self) -> dict:
        return {
            name: {m: summarise([r[m] for r in self.rows if r["class"] == name]) for m in METRICS}
            for name in self.class_names
        } | {"cases": len({r["case"] for r in self.rows}), "nsd_tolerance_mm": self.nsd_tolerance}

    def write(self, engine: Engine | None = None) -> None:
        if not is_main_process():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["case", "class", *METRICS])
            writer.writeheader()
            writer.writerows(self.rows)
        (self.output_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
