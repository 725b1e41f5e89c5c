"""``python -m pipeline sweep CONFIG``: train and evaluate a bundle per (method, fraction, seed), tabulate Dice."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep config (YAML), e.g. configs/kvasir_fewshot.yaml")
    parser.add_argument("--methods", nargs="*", help="run only these of the config's methods")
    parser.add_argument("--dry-run", action="store_true", help="write the splits and print the commands only")


def run(args: argparse.Namespace) -> int:
    from pipeline.errors import PipelineError
    from pipeline.experiments.sweep import Sweep, collect, planned_run, run_one, write_results, write_splits

    sweep = Sweep.load(args.config)
    if args.methods:
        unknown = sorted(set(args.methods) - set(sweep.methods))
        if unknown:
            raise PipelineError(f"--methods {unknown} are not in {args.config}")
        sweep.methods = {m: sweep.methods[m] for m in args.methods}
    splits = write_splits(sweep)
    for name, path in splits.items():
        for method in sweep.methods:
            if args.dry_run:
                for command in planned_run(sweep, method, name, path)[1]:
                    print(" ".join(command))
                continue
            print(f"{method} {name}: {run_one(sweep, method, name, path)}", flush=True)
    if not args.dry_run:
        csv_path, md_path = write_results(sweep, collect(sweep, splits))
        print(md_path.read_text())
        print(f"results: {csv_path}, {md_path}")
    return 0
