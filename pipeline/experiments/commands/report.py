"""``python -m pipeline report RESULTS.csv``: re-render a study's table and plots from its results file alone."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", help="a sweep's results.csv (curves.csv beside it adds the training curves)")
    parser.add_argument("--title", default=None, help="the table's title (default: the results folder's name)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.experiments.report import render

    written = render(args.results, title=args.title or Path(args.results).resolve().parent.name)
    print("written: " + ", ".join(map(str, written)))
    return 0
