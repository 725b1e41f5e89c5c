"""``python -m pipeline demo-data -o DIR``: the small SYNTHETIC Kvasir-layout dataset the demo runs on."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="folder to create (images/, masks/, SYNTHETIC.md)")
    parser.add_argument("--n", type=int, default=12, help="number of synthetic image/mask pairs")
    parser.add_argument("--size", type=int, default=160, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files")


def run(args: argparse.Namespace) -> int:
    from pipeline.data.demo_data import make_synthetic_kvasir
    from pipeline.errors import PipelineError

    if args.n < 1 or args.size < 32:
        raise PipelineError(f"--n {args.n} / --size {args.size}: need at least 1 image of at least 32 px")
    entries = make_synthetic_kvasir(args.output, n=args.n, size=args.size, seed=args.seed)
    print(f"{args.output}: {len(entries)} SYNTHETIC image/mask pairs (see SYNTHETIC.md)")
    return 0
