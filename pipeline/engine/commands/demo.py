"""``python -m pipeline demo``: the LiteMedSAM-DKA bundle end to end on a small SYNTHETIC dataset.

Generates the synthetic Kvasir-layout folder (no download, works on a fresh machine), then runs exactly the
commands a user runs on a real folder: ``python -m pipeline datalist``, ``python -m pipeline split``, and the
bundle's train -> evaluate -> inference configs through ``python -m pipeline run``, with tiny settings. The
metrics it prints are on synthetic shapes and say nothing about accuracy on real images.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.engine.bundle_run import bundle_command
from pipeline.errors import PipelineError


def add_arguments(parser) -> None:
    parser.add_argument("--output", default="runs/demo", help="folder for the synthetic data and the run's outputs")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2: a smoke run)")
    parser.add_argument("--cases", type=int, default=12, help="synthetic cases to generate")
    parser.add_argument("--bundle", default="bundles/litemedsam_dka_polyp",
                        help="bundle folder, relative to the working directory (the repository root)")


def _run(command: list) -> None:
    """Run one step; a failed step has printed its reason (one ``error:`` line), so the demo ends with its status."""
    command = [str(part) for part in command]
    print("$", shlex.join(command), flush=True)
    status = subprocess.run(command).returncode
    if status != 0:
        raise SystemExit(status)


def run(args) -> int:
    from pipeline.data.demo_data import make_synthetic_kvasir

    configs = Path(args.bundle) / "configs"
    if not (configs / "train.json").is_file():
        raise PipelineError(
            f"{configs / 'train.json'} not found: run the demo from the repository root or pass --bundle"
        )
    output = Path(args.output)
    data = output / "synthetic_kvasir"
    make_synthetic_kvasir(data, n=args.cases)
    print(f"SYNTHETIC dataset: {data}")
    pipeline = [sys.executable, "-m", "pipeline"]
    _run([*pipeline, "datalist", data, "-o", output / "datalist.json", "--name", "synthetic_kvasir",
          "--labels", '{"0": "background", "1": "synthetic polyp"}'])
    _run([*pipeline, "split", output / "datalist.json", "--fractions", "1.0", "--seeds", "0",
          "--test-fraction", "0.25", "--val-fraction", "0.25", "-o", output / "splits"])
    common = {"dataset_dir": data, "split": output / "splits" / "split_f1.0_s0.json", "output_dir": output / "run"}
    _run(bundle_command(configs, ["train.json"], max_epochs=args.epochs, **common))
    _run(bundle_command(configs, ["train.json", "evaluate.json"], **common))
    _run(bundle_command(configs, ["train.json", "inference.json"], **common))
    summary = json.loads((output / "run" / "eval" / "summary.json").read_text())
    dice = summary["1"]["dice"]
    low, high = dice["ci95"]
    print(f"SYNTHETIC data, {summary['cases']} held-out cases: Dice {dice['mean']:.3f} (95 % CI {low:.3f}-{high:.3f})")
    print(f"adapter checkpoint: {output / 'run' / 'models' / 'model.pt'}")
    print(f"metrics: {output / 'run' / 'eval'}; predictions: {output / 'run' / 'predictions'}")
    return 0
