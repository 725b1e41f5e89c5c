"""``python -m pipeline split datalist.json --fractions ... --seeds ... -o splits/``: few-shot splits."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datalist", help="MSD-style datalist JSON (from `python -m pipeline datalist`)")
    parser.add_argument(
        "--fractions", type=float, nargs="*", default=[], help="training fractions, e.g. 0.0125 0.1 1.0"
    )
    parser.add_argument(
        "--k-shot", type=int, nargs="*", default=[], help="training sets of exactly N cases (groups kept whole)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one split per seed and fraction")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of cases held out as the common test set"
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.0, help="share of the remaining cases used for validation"
    )
    parser.add_argument(
        "--group-by", help="regex on the image path; cases with the same match (group 1 if any) stay together"
    )
    parser.add_argument("-o", "--output", required=True, help="folder for split_f<fraction>_s<seed>.json files")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.data.datalist import write_json
    from pipeline.data.splits import make_splits
    from pipeline.errors import PipelineError

    if not args.fractions and not args.k_shot:
        raise PipelineError("give --fractions and/or --k-shot")
    try:
        datalist = json.loads(Path(args.datalist).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PipelineError(f"{args.datalist}: cannot read datalist ({error})") from error
    splits = make_splits(
        datalist, seeds=args.seeds, fractions=args.fractions, k_shots=args.k_shot,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction, group_by=args.group_by,
    )
    for name, split in splits.items():
        write_json(split, Path(args.output) / f"{name}.json")
    first = next(iter(splits.values()))
    print(f"{args.output}: {len(splits)} splits, test set {len(first['test'])} cases")
    return 0
