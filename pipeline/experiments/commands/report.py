"""``python -m pipeline report RESULTS.csv [RESULTS.csv ...] [--output DIR]``: re-render a study's table and plots
from its results file alone, or merge the results of one study run in parts on different machines and render the
whole."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+",
                        help="a sweep's results.csv (curves.csv and classes.csv beside it come along); several: "
                             "parts of one study to merge into --output")
    parser.add_argument("--output", default=None,
                        help="folder of the merged results (may be one of the inputs' folders: it grows)")
    parser.add_argument("--title", default=None, help="the table's title (default: the results folder's name)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.errors import PipelineError
    from pipeline.experiments.report import merge, render

    if args.output is None and len(args.results) > 1:
        raise PipelineError("several results files are merged into one folder: give it with --output")
    merged = merge(args.results, args.output) if args.output else []
    results = merged[0] if merged else Path(args.results[0])
    written = merged + render(results, title=args.title or results.resolve().parent.name)
    print("written: " + ", ".join(map(str, written)))
    return 0
