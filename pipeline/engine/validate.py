"""The bundles' first step: check the user's overrides before anything heavy is built.

``python -m monai.bundle run`` wraps every exception raised while instantiating a component in a ``RuntimeError``
and prints the whole chained stack trace, so a plain :class:`PipelineError` would end the output with MONAI's
wrapper message. :func:`check_bundle_arguments` instead stops the run with ``SystemExit``, which MONAI does not
catch: the user sees exactly one line, ``error: <what is wrong>``, and exit status 1. Library callers use
:func:`check_arguments`, which raises the :class:`PipelineError` itself.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.peft import METHODS


def check_arguments(dataset_dir: str | None, method: str | None = None, split: str | None = None,
                    checkpoint: str | None = None, checkpoint_required: bool = False,
                    checkpoint_hint: str = "--checkpoint PATH") -> None:
    """Raise :class:`PipelineError` naming the first bad argument; the split's files are checked by
    :func:`pipeline.engine.data.load_split`, which this calls."""
    from pipeline.engine.data import load_split

    if dataset_dir in (None, ""):
        raise PipelineError("dataset_dir is required: pass --dataset_dir DIR (the folder with the images and labels)")
    if not Path(dataset_dir).is_dir():
        raise PipelineError(f"dataset_dir {dataset_dir} is not a folder")
    if method is not None and method not in METHODS:
        raise PipelineError(f"unknown method {method!r} (--method); choose one of {', '.join(METHODS)}")
    check_checkpoint(checkpoint, checkpoint_hint, required=checkpoint_required)
    load_split(dataset_dir, split)


def check_checkpoint(checkpoint: str | None, hint: str, required: bool = True) -> None:
    """Raise :class:`PipelineError` when ``checkpoint`` is required but unset, or set but not a file.

    Backbones without shipped weights (SAM / MedSAM ViT-B) must stop here, before anything is built, rather than
    train a random-weight model quietly; ``hint`` says what to pass.
    """
    if checkpoint in (None, ""):
        if required:
            raise PipelineError(f"this bundle needs the backbone's pretrained weights: pass {hint}")
        return
    if not Path(checkpoint).is_file():
        raise PipelineError(f"checkpoint {checkpoint} does not exist (--checkpoint; {hint})")


def _ending_the_run(check, **arguments) -> bool:
    """Run ``check``; a :class:`PipelineError` ends the bundle run with its one-line message."""
    try:
        check(**arguments)
    except PipelineError as error:
        raise SystemExit(f"error: {error}") from None
    return True


def check_bundle_arguments(**arguments) -> bool:
    """:func:`check_arguments` for a bundle config: a bad argument ends the run with its one-line message."""
    return _ending_the_run(check_arguments, **arguments)


def check_bundle_checkpoint(checkpoint: str | None, hint: str) -> bool:
    """:func:`check_checkpoint` for a bundle config: missing weights end the run with one line."""
    return _ending_the_run(check_checkpoint, checkpoint=checkpoint, hint=hint)


def check_inputs(input: str | None = None, dataset_dir: str | None = None, split: str | None = None) -> None:
    """Inference's check: an existing ``input``, or a dataset whose held-out cases to predict."""
    from pipeline.engine.data import inference_inputs

    inference_inputs(input, dataset_dir, split)


def check_bundle_inputs(**arguments) -> bool:
    """:func:`check_inputs` for a bundle config: a bad argument ends the run with its one-line message."""
    return _ending_the_run(check_inputs, **arguments)
