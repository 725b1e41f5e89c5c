"""The inference bundles' output step: each prediction, back on its input's grid, written in the input's format.

:func:`pipeline.data.writers.write_prediction` picks the formats (PNG/JPG in: mask PNG + overlay PNG; NIfTI in:
NIfTI label map with the input's affine and shape; DICOM series in: DICOM-SEG referencing it plus the NIfTI); this
handler feeds it each case of the evaluator's output after ``Invertd`` restored the input geometry.
"""

from __future__ import annotations

import re
from pathlib import Path

from ignite.engine import Engine, Events

from pipeline.engine.distributed import is_main_process


def case_name(source: str) -> str:
    """A file stem for the case read from ``source`` (a file or a DICOM series folder)."""
    name = Path(str(source).rstrip("/")).name
    return re.sub(r"(\.nii\.gz|\.[A-Za-z0-9]+)$", "", name) or "case"


class PredictionWriter:
    """Write every case's ``pred`` label map next to the others in ``output_dir``; ``labels`` names DICOM-SEG segments."""

    def __init__(self, output_dir: str, labels: dict | None = None, pred_key: str = "pred",
                 image_key: str = "image") -> None:
        self.output_dir = Path(output_dir)
        self.labels = {int(k): v for k, v in (labels or {}).items()} or None
        self.pred_key, self.image_key = pred_key, image_key
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from pipeline.data.writers import write_prediction

        if not is_main_process():
            return
        for batch, output in zip(engine.state.batch, engine.state.output):
            item = {**batch, **output}
            reference = item[self.image_key]
            source = reference.meta.get("filename_or_obj", "case")
            self.written += write_prediction(item[self.pred_key].cpu(), reference, self.output_dir,
                                             case_name(source), self.labels)
