"""Per-case segmentation metrics with MONAI: Dice, IoU, HD95 (in mm, from the image spacing) and NSD per class.

:class:`CaseMetrics` is an evaluator handler: it scores every case at its original geometry (after ``Invertd``)
and, when evaluation completes, writes ``metrics.csv`` (one row per case and class) and ``summary.json`` (mean,
standard deviation and 95 % confidence interval of the mean per metric and class). HD95 is undefined (NaN) when a
prediction or reference is empty; such values are written as NaN and left out of the summary, which counts them.

HD95 and NSD need distance transforms of every surface, which on a CPU cost far more than Dice and IoU, so
``CaseMetrics`` hands them to worker processes and the network goes on with the next cases meanwhile. Training's
validation never pays for them: it selects models by ``MeanDice`` alone.
"""

from __future__ import annotations

import csv
import ctypes
import json
import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric
from monai.networks.utils import one_hot
from scipy import stats

from pipeline.data.formats import IMAGE_2D_SUFFIXES, has_suffix
from pipeline.engine.distributed import is_main_process
from pipeline.errors import PipelineError

METRICS = ("dice", "iou", "hd95", "nsd")
# Each metric's range: a confidence interval is clipped to it (a Dice interval never reaches past 1).
METRIC_BOUNDS = {"dice": (0.0, 1.0), "iou": (0.0, 1.0), "nsd": (0.0, 1.0), "hd95": (0.0, math.inf)}


def _spacing(label: torch.Tensor, spatial_dims: int) -> list[float]:
    pixdim = getattr(label, "pixdim", None)
    if pixdim is None:
        return [1.0] * spatial_dims
    return [float(s) for s in torch.as_tensor(pixdim).flatten()[:spatial_dims]]


def distance_unit(case: str) -> str:
    """``"pixel"`` for a case read from a photographic 2D format (PNG, JPEG, ...: no physical spacing, so HD95 is
    in pixels), ``"mm"`` otherwise (NIfTI, DICOM, NRRD carry their spacing)."""
    return "pixel" if has_suffix(case, IMAGE_2D_SUFFIXES) else "mm"


def _case_id(item: dict, key: str) -> str:
    meta = getattr(item.get(key), "meta", {}) or {}
    name = meta.get("filename_or_obj", "")
    return str(name) if name else f"case{id(item)}"


def _one_hot(label_map: torch.Tensor | np.ndarray, num_classes: int) -> torch.Tensor:
    return one_hot(torch.as_tensor(label_map)[None].long(), num_classes)


def _listed(scores: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {name: [float(v) for v in value.flatten()] for name, value in scores.items()}


def overlap_scores(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray,
                   num_classes: int) -> dict[str, list[float]]:
    """Dice and IoU per foreground class of ``(1, *spatial)`` label maps."""
    p, y = _one_hot(pred, num_classes), _one_hot(label, num_classes)
    return _listed({
        "dice": DiceMetric(include_background=False, reduction="none", ignore_empty=False)(p, y),
        "iou": MeanIoU(include_background=False, reduction="none", ignore_empty=False)(p, y),
    })


def surface_scores(pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray, num_classes: int,
                   nsd_tolerance: float, spacing: list[float]) -> dict[str, list[float]]:
    """HD95 and NSD (``nsd_tolerance`` and ``spacing`` in mm) per foreground class of ``(1, *spatial)`` label maps.

    Module-level and taking numpy arrays, so :class:`CaseMetrics` can run it in a worker process.
    """
    p, y = _one_hot(pred, num_classes), _one_hot(label, num_classes)
    return _listed({
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, y, spacing=spacing
        ),
        "nsd": SurfaceDiceMetric([nsd_tolerance] * (num_classes - 1), include_background=False, reduction="none")(
            p, y, spacing=spacing
        ),
    })


def score_case(pred: torch.Tensor, label: torch.Tensor, num_classes: int, nsd_tolerance: float = 2.0,
               spacing: list[float] | None = None) -> dict[str, list[float]]:
    """Scores of one case per foreground class; ``pred``/``label`` are ``(1, *spatial)`` label maps."""
    spacing = spacing or _spacing(label, pred.dim() - 1)
    return overlap_scores(pred, label, num_classes) | surface_scores(pred, label, num_classes, nsd_tolerance, spacing)


def summarise(values: list[float],
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and t-based 95 % CI of the finite ``values``; ``non_finite`` counts the rest.

    The interval is clipped to ``bounds``, the metric's range: with few, spread values the t-interval of a Dice
    reaches past 1, which no reader should see.
    """
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    summary: dict[str, float | int | None] = {"n": int(finite.size), "non_finite": int(array.size - finite.size)}
    if finite.size == 0:
        return {**summary, "mean": None, "std": None, "ci95": None}
    mean = float(finite.mean())
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    half = float(stats.t.ppf(0.975, finite.size - 1) * std / math.sqrt(finite.size)) if finite.size > 1 else 0.0
    low, high = bounds
    return {**summary, "mean": mean, "std": std, "ci95": [max(mean - half, low), min(mean + half, high)]}


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _worker_setup(parent: int) -> None:
    """Each worker keeps to one torch thread: the workers already run side by side, and a forked child should not
    use the OpenMP thread pool it inherited (GNU OpenMP can hang there; ``DataLoader``'s forked workers do the same).
    The scores do not depend on it: HD95 is a percentile and NSD a ratio of counts.

    On Linux each worker also dies with the evaluation (``PR_SET_PDEATHSIG``). A pool's workers wait on their queue
    forever, so when the evaluation is killed from outside (the kernel's OOM killer, a stopped sweep) they would
    live on, each holding the copy of the killed process's memory it was forked with (seen: 12 GB on this 24 GB
    machine, enough to make the next run's evaluation run out of memory too).
    """
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the evaluation died before the line above took effect
            os._exit(1)


class CaseMetrics:
    """Score each evaluated case and write ``metrics.csv`` + ``summary.json`` to ``output_dir`` at the end.

    ``class_names`` names the foreground classes (labels 1..C-1) in the outputs; ``nsd_tolerance`` is in mm.
    ``num_workers`` processes (default ``min(4, os.cpu_count())``; 0 scores in this process) compute HD95/NSD while
    the evaluator infers the next cases; the rows are gathered in case order when evaluation completes. The workers
    are forked, so they start in milliseconds instead of re-importing torch and MONAI; they get numpy label maps
    and run only CPU code, never CUDA. Under DDP only rank 0 scores and writes (other ranks' rows would be
    discarded). The workers end when evaluation completes or fails.
    """

    def __init__(self, output_dir: str, num_classes: int, class_names: list[str] | None = None,
                 nsd_tolerance: float = 2.0, pred_key: str = "pred", label_key: str = "label",
                 num_workers: int | None = None) -> None:
        if num_workers is not None and num_workers < 0:
            raise PipelineError(f"CaseMetrics: num_workers must be 0 (in-process) or more, got {num_workers}")
        self.output_dir = Path(output_dir)
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(c) for c in range(1, num_classes)])
        self.nsd_tolerance = nsd_tolerance
        self.pred_key, self.label_key = pred_key, label_key
        self.num_workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
        self.rows: list[dict] = []
        self._pending: list[tuple[str, dict[str, list[float]], Future]] = []
        self._pool: ProcessPoolExecutor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.complete)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.abort)

    def start(self, engine: Engine | None = None) -> None:
        self.close()
        self.rows.clear()
        self._pending.clear()
        if self.num_workers and is_main_process():
            self._pool = ProcessPoolExecutor(self.num_workers, multiprocessing.get_context("fork"),
                                             initializer=_worker_setup, initargs=(os.getpid(),))

    def collect(self, engine: Engine) -> None:
        if not is_main_process():
            return
        for batch, output in zip(engine.state.batch, engine.state.output, strict=False):
            item = {**batch, **output}
            pred, label = item[self.pred_key], item[self.label_key]
            if pred.shape[0] > 1:
                pred = pred.argmax(0, keepdim=True)
            spacing = _spacing(label, label.dim() - 1)
            dtype = np.min_scalar_type(self.num_classes - 1)
            pred_map, label_map = (torch.as_tensor(t).detach().cpu().numpy().astype(dtype) for t in (pred, label))
            task = partial(surface_scores, pred_map, label_map, self.num_classes, self.nsd_tolerance, spacing)
            if self._pool is None:
                surface: Future = Future()
                surface.set_result(task())
            else:
                surface = self._pool.submit(task)
            overlap = overlap_scores(pred_map, label_map, self.num_classes)
            self._pending.append((_case_id(item, self.label_key), overlap, surface))

    def complete(self, engine: Engine | None = None) -> None:
        """Gather the workers' scores into ``rows`` (in case order), end the workers, write the files."""
        try:
            for case, overlap, surface in self._pending:
                scores = overlap | surface.result()
                for index, name in enumerate(self.class_names):
                    self.rows.append({"case": case, "class": name, **{m: scores[m][index] for m in METRICS}})
        finally:
            self._pending.clear()
            self.close()
        self.write()

    def abort(self, engine: Engine, error: BaseException) -> None:
        """End the workers when evaluation fails, then let the error through."""
        self.close()
        raise error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def summary(self) -> dict:
        return {
            name: {m: summarise([r[m] for r in self.rows if r["class"] == name], METRIC_BOUNDS[m]) for m in METRICS}
            for name in self.class_names
        } | {"cases": len({r["case"] for r in self.rows}), "nsd_tolerance_mm": self.nsd_tolerance,
             "distance_unit": distance_unit(self.rows[0]["case"]) if self.rows else None}

    def write(self, engine: Engine | None = None) -> None:
        if not is_main_process():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["case", "class", *METRICS])
            writer.writeheader()
            writer.writerows(self.rows)
        (self.output_dir / "summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
