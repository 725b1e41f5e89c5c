"""A few-shot sweep: one bundle trained and evaluated per (method, training-set size, seed), results tabulated.

The research question this project serves (do adapters collapse below ~1 % of the data, and do large kernels fix
it?) is answered by curves of test Dice against training-set size (a fraction or a k-shot count) per method. Every
run is an ordinary bundle command (``python -m pipeline run``: ``monai.bundle run`` in process, a bad input in
one line), so a sweep reproduces exactly what a user would run by hand; runs whose ``eval/summary.json`` exists
are skipped, so an interrupted sweep continues where it stopped. All runs share one frozen-prefix cache.
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.engine.bundle_run import bundle_command
from pipeline.errors import PipelineError


@dataclass
class Sweep:
    """What to run: see ``configs/kvasir_fewshot.yaml`` for an annotated example."""

    bundle: str
    dataset_dir: str
    output: str
    methods: dict[str, dict]
    fractions: list[float] = field(default_factory=list)
    k_shots: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    group_by: str | None = None
    splits: str | None = None
    overrides: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Sweep:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise PipelineError(f"sweep config {path} cannot be read ({error})") from None
        if not isinstance(raw, dict):
            raise PipelineError(f"sweep config {path} must be a mapping of options")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        missing = sorted(n for n in ("bundle", "dataset_dir", "output", "methods") if n not in raw)
        if not raw.get("fractions") and not raw.get("k_shots"):
            missing.append("fractions or k_shots")
        if unknown or missing:
            raise PipelineError(f"sweep config {path}: unknown keys {unknown}, missing keys {missing}")
        raw["methods"] = {name: dict(options or {}) for name, options in dict(raw["methods"]).items()}
        return cls(**raw)


def write_splits(sweep: Sweep) -> dict[str, Path]:
    """The sweep's split files (``pipeline.data.splits``), written once under ``<output>/splits``.

    With ``splits`` set, the files ``python -m pipeline split`` wrote there are used as they are, so a sweep can
    run on a copy of the dataset that holds only the cases those splits name (e.g. on a remote GPU machine).
    """
    from pipeline.data.datalist import build_datalist, write_json
    from pipeline.data.splits import make_splits, split_name

    if sweep.splits is not None:
        names = [split_name(seed, fraction) for fraction in sweep.fractions for seed in sweep.seeds]
        names += [split_name(seed, k_shot=k) for k in sweep.k_shots for seed in sweep.seeds]
        paths = {name: Path(sweep.splits) / f"{name}.json" for name in names}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise PipelineError(f"split files named by the sweep's fractions and seeds are missing: {missing}")
        return paths

    splits = make_splits(build_datalist(sweep.dataset_dir), seeds=sweep.seeds, fractions=sweep.fractions,
                         k_shots=sweep.k_shots, test_fraction=sweep.test_fraction, val_fraction=sweep.val_fraction,
                         group_by=sweep.group_by)
    folder = Path(sweep.output) / "splits"
    paths = {}
    for name, split in splits.items():
        paths[name] = folder / f"{name}.json"
        write_json(split, paths[name])
    return paths


def planned_run(sweep: Sweep, method: str, split_name: str, split_path: Path) -> tuple[Path, list[list[str]]]:
    """The run folder of one (method, split) and its two commands: train, then evaluate.

    ``method`` is a label of ``sweep.methods``; its options may name the PEFT method under ``method`` so that
    variants of one method (``dka_zero: {method: dka, init: zero}``) sit side by side in one sweep.
    """
    run_dir = Path(sweep.output) / "runs" / method / split_name
    common = {"dataset_dir": sweep.dataset_dir, "split": split_path, "output_dir": run_dir}
    configs = Path(sweep.bundle) / "configs"
    if "cache_dir" in json.loads((configs / "train.json").read_text()):
        # every run shares one frozen-prefix cache: the test set (and, per method's prefix, the training views)
        # is encoded once for the whole sweep
        common["cache_dir"] = Path(sweep.output) / "cache"
    options = dict(sweep.methods[method])
    train = {"method": options.pop("method", method), "method_options": options, **common}
    return run_dir, [bundle_command(configs, ["train.json"], **{**sweep.overrides, **train}),
                     bundle_command(configs, ["train.json", "evaluate.json"], **{**sweep.overrides, **common})]


def run_one(sweep: Sweep, method: str, split_name: str, split_path: Path) -> Path:
    """Train then evaluate one (method, split); returns the run folder. Skips a run already evaluated."""
    run_dir, commands = planned_run(sweep, method, split_name, split_path)
    if (run_dir / "eval" / "summary.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "sweep.log").open("a") as log:
        for command in commands:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            if subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise PipelineError(f"run {method}/{split_name} failed; its output is in {run_dir / 'sweep.log'}")
    return run_dir


def foreground_dice(summary: dict) -> float:
    """Mean over foreground classes of the per-class mean Dice in a bundle's ``summary.json``."""
    means = [metrics["dice"]["mean"] for key, metrics in summary.items()
             if isinstance(metrics, dict) and "dice" in metrics and key != "0"]
    means = [m for m in means if m is not None]
    return statistics.fmean(means) if means else float("nan")


def collect(sweep: Sweep, splits: dict[str, Path]) -> list[dict]:
    rows = []
    for method in sweep.methods:
        for name, path in splits.items():
            summary_path = Path(sweep.output) / "runs" / method / name / "eval" / "summary.json"
            if not summary_path.is_file():
                continue
            split = json.loads(path.read_text())
            rows.append({"method": method, "fraction": split["fraction"], "k_shot": split.get("k_shot"),
                         "seed": split["seed"],
                         "n_train": len(split["training"]), "n_test": len(split["test"]),
                         "dice": foreground_dice(json.loads(summary_path.read_text()))})
    return rows


def _training_set(row: dict) -> tuple[int, float]:
    """A row's column: its k-shot count, or its training fraction (k-shot columns first, then by fraction)."""
    return (0, row["k_shot"]) if row.get("k_shot") is not None else (1, row["fraction"])


def table(rows: list[dict]) -> str:
    """Markdown: one row per method, one column per training set size, mean ± std test Dice over seeds."""
    columns = sorted({_training_set(r) for r in rows})
    sizes = {c: sorted({r["n_train"] for r in rows if _training_set(r) == c}) for c in columns}
    titles = [
        f"{value} cases (k-shot)" if kind == 0 else f"{value:g} ({'/'.join(map(str, sizes[(kind, value)]))} cases)"
        for kind, value in columns
    ]
    header = "| method | " + " | ".join(titles) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for column in columns:
            values = [r["dice"] for r in rows if r["method"] == method and _training_set(r) == column]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f} (n={len(values)})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(sweep: Sweep, rows: list[dict]) -> tuple[Path, Path]:
    output = Path(sweep.output)
    csv_path, md_path = output / "results.csv", output / "results.md"
    with csv_path.open("w", newline="") as stream:
        writer = csv.DictWriter(
            stream, fieldnames=["method", "fraction", "k_shot", "seed", "n_train", "n_test", "dice"]
        )
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(table(rows))
    return csv_path, md_path
