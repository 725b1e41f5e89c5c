"""The inference bundles' output step: each prediction, back on its input's grid, written in the input's format.

:func:`pipeline.data.writers.write_prediction` picks the formats (PNG/JPG in: mask PNG + overlay PNG; NIfTI in:
NIfTI label map with the input's affine and shape; DICOM series in: DICOM-SEG referencing it plus the NIfTI); this
handler feeds it each case of the evaluator's output after ``Invertd`` restored the input geometry.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ignite.engine import Engine, Events

from pipeline.data.formats import strip_suffix
from pipeline.engine.distributed import is_main_process
from pipeline.errors import PipelineError

OUTPUT_NAME = "output_name"
"""Item key of the file stem :func:`case_names` chose for a case's outputs."""


def case_name(source: str) -> str:
    """A file stem for the case read from ``source`` (a file or a DICOM series folder)."""
    return strip_suffix(str(source).rstrip("/")) or "case"


def case_names(sources: list[str]) -> list[str]:
    """Distinct output stems for ``sources``: the plain stem where it is unique, otherwise the path below the
    clashing sources' common folder with separators and dots as ``_`` (``case1.png``, ``case1.jpg`` ->
    ``case1_png``, ``case1_jpg``; ``p1/ct``, ``p2/ct`` -> ``p1_ct``, ``p2_ct``), so no output overwrites another."""
    stems = [case_name(s) for s in sources]
    names = list(stems)
    for stem in set(stems):
        clashing = [i for i, s in enumerate(stems) if s == stem]
        if len(clashing) > 1:
            paths = [os.path.abspath(str(sources[i]).rstrip("/")) for i in clashing]
            root = os.path.commonpath(paths)
            for i, path in zip(clashing, paths, strict=False):
                names[i] = re.sub(r"[/.\\]+", "_", os.path.relpath(path, root)).strip("_") or stem
    seen: dict[str, str] = {}
    for source, name in zip(sources, names, strict=False):
        if name in seen:
            raise PipelineError(f"{source}: gives the same output name '{name}' as {seen[name]}; rename one of them")
        seen[name] = source
    return names


class PredictionWriter:
    """Write every case's ``pred`` label map next to the others in ``output_dir``; ``labels`` names DICOM-SEG segments
    and ``segment_codes`` can give their SNOMED codes (else they follow from the names).

    The item's ``boxes_key`` (the user's box prompts, original pixel coordinates) are drawn on the overlay, and its
    ``objects_key`` (one mask per box, :class:`pipeline.engine.task.SplitObjectsd`) written beside the union.

    Each case is written under its item's ``output_name`` (set by :func:`pipeline.engine.cases.inference_inputs`),
    else its file stem; a name another input of this run already wrote under stops the run before overwriting it.
    """

    def __init__(self, output_dir: str, labels: dict | None = None, pred_key: str = "pred",
                 image_key: str = "image", boxes_key: str = "prompt_boxes", objects_key: str = "objects",
                 segment_codes: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.labels = {int(k): v for k, v in (labels or {}).items()} or None
        self.pred_key, self.image_key = pred_key, image_key
        self.boxes_key, self.objects_key = boxes_key, objects_key
        self.segment_codes = segment_codes
        self.written: list[Path] = []
        self.sources: dict[str, str] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from pipeline.data.writers import write_prediction

        if not is_main_process():
            return
        for batch, output in zip(engine.state.batch, engine.state.output, strict=False):
            item = {**batch, **output}
            reference = item[self.image_key]
            source = str(reference.meta.get("filename_or_obj", "case"))
            name = item.get(OUTPUT_NAME) or case_name(source)
            if self.sources.setdefault(name, source) != source:
                raise PipelineError(f"{source}: its output name '{name}' is taken by {self.sources[name]}; "
                                    "nothing of it was written")
            self.written += write_prediction(item[self.pred_key].cpu(), reference, self.output_dir, name, self.labels,
                                             boxes=item.get(self.boxes_key), objects=item.get(self.objects_key),
                                             segment_codes=self.segment_codes)
