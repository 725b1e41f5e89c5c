"""The bundles' first step: check the user's overrides before anything heavy is built.

``python -m monai.bundle run`` wraps every exception raised while instantiating a component in a ``RuntimeError``
and prints the whole chained stack trace, so a plain :class:`PipelineError` would end the output with MONAI's
wrapper message. The ``check_bundle_*`` functions instead print ``error: <what is wrong>`` on stderr and stop the
run with :class:`BadInput`, a ``SystemExit`` that MONAI does not catch: the user sees exactly that one line and
exit status :data:`pipeline.cli.EXIT_BAD_INPUT`, the status ``python -m pipeline`` gives for the same error.
Library callers use the plain ``check_*`` functions, which raise the :class:`PipelineError` itself.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.cli import EXIT_BAD_INPUT
from pipeline.errors import PipelineError
from pipeline.options import flag
from pipeline.peft import METHODS

# What each numeric setting must be: (type, smallest allowed value). ``checkpoint_every_n_iterations`` 0 means off,
# ``warmup_steps`` 0 no warmup.
SETTINGS = {
    "max_epochs": (int, 1), "batch_size": (int, 1), "val_interval": (int, 1), "patience": (int, 1),
    "image_size": (int, 1), "num_workers": (int, 0), "seed": (int, 0), "checkpoint_every_n_iterations": (int, 0),
    "num_classes": (int, 2), "warmup_steps": (int, 0),
    "lr": (float, 0.0), "adapter_lr": (float, 0.0), "head_lr": (float, 0.0),
}
FLAGS = ("resume", "overwrite")


def check_arguments(dataset_dir: str | None, method: str | None = None, split: str | None = None,
                    checkpoint: str | None = None, checkpoint_required: bool = False,
                    checkpoint_hint: str = "--checkpoint PATH") -> None:
    """Raise :class:`PipelineError` naming the first bad argument; the split's files are checked by
    :func:`pipeline.engine.cases.load_split`, which this calls."""
    from pipeline.engine.cases import load_split

    if dataset_dir in (None, ""):
        raise PipelineError("dataset_dir is required: pass --dataset_dir DIR (the folder with the images and labels)")
    if not Path(dataset_dir).is_dir():
        raise PipelineError(f"dataset_dir {dataset_dir} is not a folder")
    if method is not None and method not in METHODS:
        raise PipelineError(f"unknown method {method!r} (--method); choose one of {', '.join(METHODS)}")
    check_checkpoint(checkpoint, checkpoint_hint, required=checkpoint_required)
    load_split(dataset_dir, split)


def check_checkpoint(checkpoint: str | None, hint: str, required: bool = True, backbone: str | None = None) -> None:
    """Raise :class:`PipelineError` when ``checkpoint`` is required but unset, or set but not a file.

    Backbones without shipped weights (SAM / MedSAM ViT-B) must stop here, before anything is built, rather than
    train a random-weight model quietly; ``hint`` says what to pass. ``"shipped"`` names the weights inside the
    install and is valid for the ``backbone`` that has them (:data:`pipeline.models.SHIPPED_WEIGHTS`).
    """
    from pipeline.models import SHIPPED, SHIPPED_WEIGHTS

    if checkpoint in (None, ""):
        if required:
            raise PipelineError(f"this bundle needs the backbone's pretrained weights: pass {hint}")
        return
    if checkpoint == SHIPPED and backbone in SHIPPED_WEIGHTS:
        return
    if not Path(checkpoint).is_file():
        shipped = f"; only {', '.join(SHIPPED_WEIGHTS)} ships its weights" if checkpoint == SHIPPED else ""
        raise PipelineError(f"checkpoint {checkpoint} does not exist (--checkpoint; {hint}){shipped}")


class BadInput(SystemExit):
    """Ends a bundle run with status :data:`EXIT_BAD_INPUT` after its one line was printed; ``str()`` is that line."""

    def __init__(self, line: str) -> None:
        super().__init__(EXIT_BAD_INPUT)
        self.line = line

    def __str__(self) -> str:
        return self.line


def _ending_the_run(check, **arguments) -> bool:
    """Run ``check``; a :class:`PipelineError` ends the bundle run with its one-line message on stderr."""
    try:
        check(**arguments)
    except PipelineError as error:
        line = f"error: {error}"
        sys.stdout.flush()  # the log first: where both go to one file (a sweep run's log), the verdict ends it
        print(line, file=sys.stderr, flush=True)
        raise BadInput(line) from None
    return True


def check_settings(method: str | None = None, method_options: dict | None = None, prompt: str = "none",
                   class_boxes: bool = False, **settings) -> None:
    """Raise :class:`PipelineError` for the first setting of the wrong type or out of range (see :data:`SETTINGS`),
    a yes/no flag that is neither, method options the method refuses (``r: 0``, an unknown option), or a class
    count the prompt cannot give (:func:`pipeline.engine.task.out_channels`)."""
    from pipeline.engine.task import out_channels
    from pipeline.peft.methods import build_method

    for name, value in settings.items():
        if name in FLAGS:
            flag(name, value)
            continue
        kind, smallest = SETTINGS[name]
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or (isinstance(value, float) and kind is float)
        if not number or value < smallest or (kind is float and value == smallest):
            wanted = f"a whole number >= {smallest}" if kind is int else f"a number > {smallest:g}"
            raise PipelineError(f"{name} must be {wanted} (--{name}), got {value!r}")
    if method_options is not None and not isinstance(method_options, dict):
        raise PipelineError(
            f"method_options must be a mapping such as {{'r': 8}} (--method_options), got {method_options!r}")
    if method in METHODS:
        try:
            build_method(method, **(method_options or {}))
        except PipelineError as error:
            raise PipelineError(f"--method_options: {error}") from None
    if "num_classes" in settings:
        out_channels(settings["num_classes"], prompt, class_boxes)


def check_bundle_settings(**settings) -> bool:
    """:func:`check_settings` for a bundle config: a bad setting ends the run with its one-line message."""
    return _ending_the_run(check_settings, **settings)


def check_bundle_run_folder(output_dir: str, settings: dict, resume=False, overwrite=False) -> bool:
    """:func:`pipeline.engine.handlers.claim_run_folder` for a bundle config: a folder that belongs to another
    run ends this one with one line saying so."""
    from pipeline.engine.handlers import claim_run_folder

    def claim() -> None:
        claim_run_folder(output_dir, settings, resume=flag("resume", resume), overwrite=flag("overwrite", overwrite))

    return _ending_the_run(claim)


def check_bundle_arguments(**arguments) -> bool:
    """:func:`check_arguments` for a bundle config: a bad argument ends the run with its one-line message."""
    return _ending_the_run(check_arguments, **arguments)


def check_bundle_call(check, **arguments) -> bool:
    """``check(**arguments)`` for a bundle config, e.g. a backbone's own source check
    (:func:`pipeline.models.clipseg.check_source`): a :class:`PipelineError` ends the run with its one line."""
    return _ending_the_run(check, **arguments)


def check_bundle_checkpoint(checkpoint: str | None, hint: str, backbone: str | None = None) -> bool:
    """:func:`check_checkpoint` for a bundle config: missing weights end the run with one line."""
    return _ending_the_run(check_checkpoint, checkpoint=checkpoint, hint=hint, backbone=backbone)


def check_inputs(input: str | None = None, dataset_dir: str | None = None, split: str | None = None,
                 **prompts) -> None:
    """Inference's check: an existing ``input``, or a dataset whose held-out cases to predict, and for a
    box-prompted model a box for every case (the ``prompts`` arguments of
    :func:`pipeline.engine.cases.inference_inputs`)."""
    from pipeline.engine.cases import inference_inputs

    inference_inputs(input, dataset_dir, split, **prompts)


def check_bundle_inputs(**arguments) -> bool:
    """:func:`check_inputs` for a bundle config: a bad argument ends the run with its one-line message."""
    return _ending_the_run(check_inputs, **arguments)
