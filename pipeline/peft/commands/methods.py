"""``python -m pipeline methods``: the adapter methods, their default options and what each is for."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable defaults")


def run(args: argparse.Namespace) -> int:
    from pipeline.peft.methods import METHODS

    defaults = {name: cls().options() for name, cls in METHODS.items()}
    if args.json:
        print(json.dumps(defaults, indent=2))
        return 0
    for name, cls in METHODS.items():
        summary = sys.modules[cls.__module__].__doc__.strip().splitlines()[0]
        options = ", ".join(f"{key}={value!r}" for key, value in defaults[name].items()) or "no options"
        print(f"{name:<13} {summary}\n{'':<13} {options}")
    return 0
