"""``python -m pipeline predict -m RUN/models/model.pt -i IN -o OUT [--box x0,y0,x1,y1 | --prompts FILE]``.

Segmentation of new cases in nnU-Net's spirit: a trained model, an input (an image file, a folder of PNG/JPG
images, a NIfTI file or a DICOM series folder) and an output folder are all it needs. It is not a second code path:
it runs the bundle the model was trained with (the ``bundle_name`` stored in ``model.pt``), its ``train.json`` +
``inference.json``, through ``python -m pipeline run``, which takes the backbone, its weights, image size, prompt and
classes from the checkpoint (:mod:`pipeline.engine.model_card`). So the outputs are the bundle's (mask + overlay
PNGs, NIfTI, DICOM-SEG), with its progress bar and ETA, and a bad input is one ``error:`` line.

Box-prompted models need boxes for new images, in pixel coordinates of the ORIGINAL image (MedSAM's convention):
``--box`` for one image, ``--prompts FILE`` (JSON or CSV, one or more boxes per input file) for several. A model
of several classes (the slice bundle on hippocampus: anterior, posterior) needs each box's class: ``--box_class``, or
the file's class column.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.errors import PipelineError

BUNDLES = Path(__file__).resolve().parents[3] / "bundles"
"""The repository's (and the Docker image's) bundle folders."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--model", required=True, help="the adapter checkpoint, e.g. runs/x/models/model.pt")
    parser.add_argument("-i", "--input", required=True,
                        help="an image, a folder of PNG/JPG images, a NIfTI file or a DICOM series folder")
    parser.add_argument("-o", "--output", required=True, help="folder for the predictions (created)")
    parser.add_argument("--box", help="box-prompted models, one input: x0,y0,x1,y1 in pixel coordinates of the "
                                      "original image (x = column, y = row), or x0,y0,z0,x1,y1,z1 in voxel indices "
                                      "of a volume (z = slice)")
    parser.add_argument("--box_class", help="the class (name or number) of --box, for a model of several classes")
    parser.add_argument("--prompts", help="box-prompted models: JSON or CSV file of boxes per input file "
                                          "(original pixel coordinates, optionally a class per box; see "
                                          "docs/bundles.md)")
    parser.add_argument("--whole_image_box", action="store_true",
                        help="box-prompted models: prompt inputs without a box with the whole image")
    parser.add_argument("--bundle", help="the bundle folder, for checkpoints that do not name theirs")


def bundle_folder(model: Path, settings: dict, given: str | None) -> Path:
    """The bundle ``model`` was trained with: ``given``, else the ``bundle_name`` its stored ``settings`` name."""
    name = settings.get("bundle_name")
    if given is None and name is None:
        raise PipelineError(f"{model} does not name the bundle it was trained with (an older checkpoint): "
                            "pass --bundle bundles/NAME")
    folder = Path(given) if given is not None else BUNDLES / name
    if not (folder / "configs" / "inference.json").is_file():
        raise PipelineError(f"bundle {folder} has no configs/inference.json (--bundle)")
    return folder


def run(args: argparse.Namespace) -> int:
    from pipeline.engine.commands import run as bundle_run
    from pipeline.engine.model_card import stored_settings

    model = Path(args.model)
    if not model.is_file():
        raise PipelineError(f"model {model} does not exist (-m/--model)")
    settings = stored_settings(model)  # read once: the checkpoint holds every tensor too
    configs = bundle_folder(model, settings, args.bundle) / "configs"
    prompt = settings.get("prompt", "box")  # an older checkpoint: the bundle's own check decides
    if (args.box or args.box_class or args.prompts or args.whole_image_box) and prompt != "box":
        raise PipelineError(f"{model} is not box-prompted (prompt {prompt!r}): drop --box, --box_class, --prompts and "
                            "--whole_image_box")
    words = [str(configs / "train.json"), "inference", "--input", args.input, "--network_def#adapter", str(model),
             "--output_dir", args.output, "--prediction_dir", args.output]
    for key in ("box", "box_class", "prompts"):
        if getattr(args, key) is not None:
            words += [f"--{key}", getattr(args, key)]
    if args.whole_image_box:
        words += ["--whole_image_box", "true"]
    return bundle_run.run(argparse.Namespace(argv=words))
