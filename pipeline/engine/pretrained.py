"""The check that a bundle whose backbone has no shipped weights was given them (SAM / MedSAM ViT-B).

Those weights (``medsam_vit_b.pth``, ``sam_vit_b_01ec64.pth``) are downloaded by the user; a run without them must
stop before anything is built, with one line naming the flag, not with a random-weight model that trains quietly.
Like :func:`pipeline.engine.validate.check_bundle_arguments`, the bundle form ends the run with ``SystemExit``.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError


def check_checkpoint(checkpoint: str | None, hint: str) -> None:
    """Raise :class:`PipelineError` when ``checkpoint`` is unset or not a file; ``hint`` says what to pass."""
    if checkpoint in (None, ""):
        raise PipelineError(f"this bundle needs the backbone's pretrained weights: pass {hint}")
    if not Path(checkpoint).is_file():
        raise PipelineError(f"checkpoint {checkpoint} does not exist (--checkpoint; {hint})")


def check_bundle_checkpoint(checkpoint: str | None, hint: str) -> bool:
    """:func:`check_checkpoint` for a bundle config: a missing checkpoint ends the run with one line."""
    try:
        check_checkpoint(checkpoint, hint)
    except PipelineError as error:
        raise SystemExit(f"error: {error}") from None
    return True
