"""A few-shot sweep: one bundle trained and evaluated per (method, training-set size, seed), results tabulated.

The research question this project serves (do adapters collapse below ~1 % of the data, and do large kernels fix
it?) is answered by curves of test Dice against training-set size (a fraction or a k-shot count) per method. Every
run is an ordinary bundle command (``python -m pipeline run``: ``monai.bundle run`` in process, a bad input in
one line), so a sweep reproduces exactly what a user would run by hand; runs whose ``eval/summary.json`` exists
are skipped, so an interrupted sweep continues where it stopped. All runs share one frozen-prefix cache.

The training budget is counted in optimiser steps (``steps``), not epochs: a 5-image and a 40-image run then get
the same number of updates, where equal epochs would give the 40-image run eight times more. Validation runs
every ``val_every_steps`` steps, and early stopping counts validation rounds (the bundle's ``patience``).

A *selection* sweep (``test: false``), such as the grid that picks a method's defaults, trains only and reports each
run's best validation Dice: choosing on the test set would make the test set part of training, and skipping its
evaluation also saves that time. Its tables go to ``results`` (default ``output``), so a selection sweep can share
the main study's run folders (and reuse the runs they have in common) without overwriting the study's tables.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import NamedTuple

import yaml

from pipeline.engine.bundle_run import bundle_command
from pipeline.engine.handlers import RUN_RECORD, differences, fingerprint, with_recorded_options
from pipeline.engine.record import TRAINING_RECORD
from pipeline.errors import PipelineError
from pipeline.experiments.report import CLASS_FIELDS, CURVE_FIELDS, RESULT_FIELDS, render, write_rows
from pipeline.options import flag


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
    steps: int | None = None
    val_every_steps: int | None = None
    overrides: dict = field(default_factory=dict)
    test: bool = True
    results: str | None = None

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
        raw["test"] = flag("test", raw.get("test", True))
        return cls(**raw)

    @property
    def results_dir(self) -> Path:
        """Where ``results.csv``, ``curves.csv``, ``classes.csv`` and the report are written."""
        return Path(self.results or self.output)


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


def budget(sweep: Sweep, n_train: int, batch_size: int, samples_per_case: int = 1) -> dict:
    """``max_epochs`` and ``val_interval`` (in epochs) giving ``n_train`` cases ``sweep.steps`` optimiser steps
    and a validation round every ``sweep.val_every_steps`` steps (rounded to whole epochs); ``{}`` without
    ``steps``, leaving the bundle's epochs as they are. An epoch holds ``samples_per_case`` items per case (the
    slice bundle draws ``slices_per_volume`` slices of each volume)."""
    if sweep.steps is None:
        return {}
    per_epoch = math.ceil(n_train * samples_per_case / batch_size)
    every = sweep.val_every_steps or per_epoch
    return {"max_epochs": math.ceil(sweep.steps / per_epoch), "val_interval": max(1, round(every / per_epoch))}


@cache
def train_config(bundle: str) -> dict:
    """A bundle's ``train.json``, read once per process."""
    return json.loads((Path(bundle) / "configs" / "train.json").read_text())


def _bundle_default(sweep: Sweep, key: str):
    """``key``'s value in every run of ``sweep``: the sweep's override, else the bundle's ``train.json``."""
    return sweep.overrides.get(key, train_config(sweep.bundle).get(key))


def evaluated(run_dir: Path) -> bool:
    """Whether a run folder holds its test evaluation."""
    return (run_dir / "eval" / "summary.json").is_file()


def _record(path: Path) -> dict:
    """A run's JSON record, or ``{}`` when it is missing or half-written (a killed run's)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def trained(run_dir: Path) -> bool:
    """Whether a run folder's training ended (budget spent or early stop): its ``training.json`` says so, or the
    run was evaluated (a sweep evaluates only after the training command succeeded; records written before
    ``completed`` existed say nothing)."""
    return evaluated(run_dir) or _record(run_dir / TRAINING_RECORD).get("completed") is True


def done(sweep: Sweep, run_dir: Path) -> bool:
    """Whether a run has all ``sweep`` asks of it (an evaluation, or for a selection sweep its training): a sweep
    skips such a run and tabulates it."""
    return evaluated(run_dir) if sweep.test else trained(run_dir)


@dataclass(frozen=True)
class Variant:
    """One label of a sweep's ``methods``: the PEFT ``method``, its ``options`` for ``apply_peft``, and the bundle
    ``settings`` this variant alone changes (``layers``, learning rates, ...)."""

    method: str
    options: dict
    settings: dict


def variant(sweep: Sweep, label: str) -> Variant:
    """``methods: {label: {method: M, layers: L, overrides: {key: value}, **options}}``; ``method`` defaults to the
    label, so ``dka: {}`` is DKA with its defaults, and ``dka_top: {method: dka, layers: top}`` or
    ``dka_lr1e-4: {method: dka, overrides: {adapter_lr: 1.0e-4}}`` sit beside it in one sweep."""
    entry = dict(sweep.methods[label])
    method = entry.pop("method", label)
    settings = dict(entry.pop("overrides", None) or {})
    if "layers" in entry:
        settings["layers"] = entry.pop("layers")
    return Variant(method, entry, settings)


def planned_settings(sweep: Sweep, method: str, n_train: int) -> dict:
    """The bundle settings one method label runs with on ``n_train`` training cases: the sweep's overrides, the
    step budget, and the label's method, options and own settings."""
    chosen = variant(sweep, method)
    samples_per_case = int(_bundle_default(sweep, "slices_per_volume") or 1)
    steps = budget(sweep, n_train, int(_bundle_default(sweep, "batch_size")), samples_per_case)
    return {**sweep.overrides, **steps, **chosen.settings, "method": chosen.method, "method_options": chosen.options}


NOT_SETTINGS = ("dataset_dir", "split")
"""Recorded in ``run.json`` but not a setting a finished run is checked against: where the data lies (a device run
reads it elsewhere) and the split file (the run folder is the split's, and the bundle refuses to train a folder on
another split)."""


def check_ran_as_planned(sweep: Sweep, run_dir: Path, settings: dict) -> None:
    """Refuse a finished run that ran with other settings than the sweep now asks for.

    Edit a config's learning rate, budget or a method's options, or change a bundle default the config leaves
    unsaid, and rerun it: without this check, the runs of the old settings would be skipped as done and tabulated
    under the new ones, a wrong table without a word. Compared: every setting the run's ``run.json`` records (but
    :data:`NOT_SETTINGS`; one it predates as it was then, :func:`with_recorded_options`) against
    :func:`planned_settings`, else the bundle's ``train.json`` default, each as the bundle would record it
    (:func:`~pipeline.engine.handlers.fingerprint`: a method's options resolved; a checkpoint by its file name,
    which a device run carries to another folder), and the budget (``max_epochs``) its ``training.json`` records.
    """
    def checkpoint_by_name(record: dict) -> dict:
        if isinstance(record.get("checkpoint"), str):
            record = {**record, "checkpoint": Path(record["checkpoint"]).name}
        return record

    recorded = {**with_recorded_options(_record(run_dir / RUN_RECORD).get("fingerprint", {})),
                "max_epochs": _record(run_dir / TRAINING_RECORD).get("max_epochs")}
    defaults = {key: value for key, value in train_config(sweep.bundle).items() if _literal(value)}
    keys = [key for key in recorded
            if recorded[key] is not None and key not in NOT_SETTINGS and (key in settings or key in defaults)]
    planned = checkpoint_by_name(fingerprint({key: settings[key] if key in settings else defaults[key]
                                              for key in keys}))
    found = differences(checkpoint_by_name({key: recorded[key] for key in keys}), planned, most=3)
    if found:
        raise PipelineError(f"{run_dir} ran with other settings than this sweep asks ({found}): give the sweep "
                            "another output folder, or delete that run folder to run it again")


def _literal(value) -> bool:
    """Whether a ``train.json`` value is the value itself, not an expression (``$…``) or a reference (``@…``)."""
    return not (isinstance(value, str) and value.startswith(("$", "@"))) and not isinstance(value, (dict, list))


def run_folder(sweep: Sweep, method: str, split_name: str) -> Path:
    """Where one (method label, split) of ``sweep`` runs: ``<output>/runs/<label>/<split>``."""
    return Path(sweep.output) / "runs" / method / split_name


class PlannedRun(NamedTuple):
    run_dir: Path
    commands: list[list[str]]
    settings: dict


def planned_run(sweep: Sweep, method: str, split_name: str, split_path: Path) -> PlannedRun:
    """The run folder of one (method label, split), its commands (train, then evaluate; a selection sweep's runs:
    train only) and the settings they pass."""
    run_dir = run_folder(sweep, method, split_name)
    common = {"dataset_dir": sweep.dataset_dir, "split": split_path, "output_dir": run_dir}
    configs = Path(sweep.bundle) / "configs"
    if "cache_dir" in train_config(sweep.bundle):
        # every run shares one frozen-prefix cache: the test set (and, per method's prefix, the training views)
        # is encoded once for the whole sweep
        common["cache_dir"] = Path(sweep.output) / "cache"
    settings = planned_settings(sweep, method, len(json.loads(Path(split_path).read_text())["training"]))
    commands = [bundle_command(configs, ["train.json"], **settings, **common)]
    if sweep.test:
        commands.append(bundle_command(configs, ["train.json", "evaluate.json"], **settings, **common))
    return PlannedRun(run_dir, commands, settings)


@contextlib.contextmanager
def runs_stop_with_the_sweep():
    """While in this block, ``kill PID`` (SIGTERM) to the sweep also stops the bundle run it started.

    Why: each run is a child process, and SIGTERM to the sweep alone would end the sweep and leave its training
    running, orphaned. Run the sweep again and it would meet that training in the run folder it is still writing.
    (The run-folder lock makes the second sweep stop there rather than train the folder twice.) Raising
    ``SystemExit`` from the handler interrupts ``subprocess.run``'s wait, and ``subprocess.run`` kills its
    child on any exception; the run then resumes from its last atomic checkpoint when the sweep is run again.
    Ctrl-C needs none of this: the terminal signals the whole process group.
    """

    def stop(signum, frame):
        print(f"sweep: stopped by {signal.Signals(signum).name}; the run it had started was stopped too and resumes "
              "when the sweep is run again", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_one(sweep: Sweep, method: str, split_name: str, split_path: Path) -> Path:
    """Train then evaluate one (method, split); returns the run folder. Skips a run that is :func:`done`.

    A run whose training ended but whose evaluation did not (killed during it) goes straight to the evaluation,
    without building and restoring the model once more for nothing (runs of older code, whose resume state does
    not record an early stop, would even train on past it).
    """
    run_dir, commands, settings = planned_run(sweep, method, split_name, split_path)
    if trained(run_dir):
        check_ran_as_planned(sweep, run_dir, settings)
        if done(sweep, run_dir):
            return run_dir
        commands = commands[1:]
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "sweep.log").open("a") as log, runs_stop_with_the_sweep():
        for command in commands:
            log.write("$ " + shlex.join(command) + "\n")
            log.flush()
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
            if code != 0:
                raise PipelineError(f"run {method}/{split_name} {_ended(code)}; its output is in "
                                    f"{run_dir / 'sweep.log'}")
    return run_dir


def _ended(code: int) -> str:
    """How a bundle process that did not succeed ended, in words. Killed by a signal, it could not write why: its
    log just stops, so the signal is the only clue (SIGKILL from nowhere is the kernel's out-of-memory killer)."""
    if code > 0:
        return f"failed (exit status {code})"
    name = signal.Signals(-code).name
    return f"was killed by {name}" + (" (the out-of-memory killer sends it: run fewer jobs side by side)"
                                      if -code == signal.SIGKILL else "")


TEST_METRICS = ("dice", "iou", "hd95")
"""The test-set metrics a sweep tabulates per run and per class."""


def foreground_classes(summary: dict) -> dict[str, dict]:
    """The per-class scores of a bundle's ``summary.json`` by class name, background (``"0"``) left out."""
    return {key: scores for key, scores in summary.items()
            if isinstance(scores, dict) and "dice" in scores and key != "0"}


def foreground_mean(summary: dict, metric: str = "dice") -> float:
    """Mean over foreground classes of the per-class mean ``metric`` in a bundle's ``summary.json``."""
    means = [scores[metric]["mean"] for scores in foreground_classes(summary).values() if metric in scores]
    means = [m for m in means if m is not None]
    return statistics.fmean(means) if means else float("nan")


def collect(sweep: Sweep, splits: dict[str, Path]) -> tuple[list[dict], list[dict], list[dict]]:
    """The results rows (:data:`RESULT_FIELDS`), the training-curve rows (:data:`CURVE_FIELDS`) and the per-class
    rows (:data:`CLASS_FIELDS`) of every :func:`done` run; a selection sweep's rows have no test columns, even for
    runs another sweep evaluated."""
    rows, curves, classes = [], [], []
    for method in sweep.methods:
        chosen = variant(sweep, method)
        layers = chosen.settings.get("layers", _bundle_default(sweep, "layers"))
        for name, path in splits.items():
            run_dir = run_folder(sweep, method, name)
            if not done(sweep, run_dir):
                continue
            split = json.loads(path.read_text())
            check_ran_as_planned(sweep, run_dir, planned_settings(sweep, method, len(split["training"])))
            summary = json.loads((run_dir / "eval" / "summary.json").read_text()) if sweep.test else {}
            record_path = run_dir / TRAINING_RECORD
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            rows.append({
                "method": method, "peft_method": chosen.method, "layers": layers,
                "options": json.dumps({**chosen.options, **chosen.settings}, sort_keys=True),
                "fraction": split["fraction"], "k_shot": split.get("k_shot"), "n_train": len(split["training"]),
                "n_test": len(split["test"]) if sweep.test else None, "seed": split["seed"],
                **{metric: foreground_mean(summary, metric) if summary else None for metric in TEST_METRICS},
                "hd95_unit": summary.get("distance_unit"),
                "trainable_parameters": record.get("trainable_parameters"),
                "train_seconds": record.get("train_seconds"), "epochs_run": record.get("epochs_run"),
                "iterations_run": record.get("iterations_run"), "best_val_dice": record.get("best_val_metric"),
                "device": f"{record['device']} ({record['machine']})" if "machine" in record else record.get("device"),
            })
            curves += [{"method": method, "n_train": len(split["training"]), "seed": split["seed"],
                        "epoch": entry["epoch"], "iteration": entry["iteration"],
                        "train_loss": entry["train_loss"], "val_dice": entry["val_metric"]}
                       for entry in record.get("curves", [])]
            classes += [{"method": method, "n_train": len(split["training"]), "seed": split["seed"], "class": name,
                         **{metric: scores[metric]["mean"] for metric in TEST_METRICS if metric in scores},
                         "hd95_unit": summary.get("distance_unit")}
                        for name, scores in foreground_classes(summary).items()]
    return rows, curves, classes


def write_results(sweep: Sweep, rows: list[dict], curves: list[dict], classes: list[dict]) -> list[Path]:
    """``results.csv``, ``curves.csv`` and ``classes.csv`` in the sweep's ``results_dir``, then the report rendered
    from them."""
    output = sweep.results_dir
    output.mkdir(parents=True, exist_ok=True)
    write_rows(curves, output / "curves.csv", CURVE_FIELDS)
    write_rows(classes, output / "classes.csv", CLASS_FIELDS)
    results = write_rows(rows, output / "results.csv", RESULT_FIELDS)
    budget_line = f"{sweep.steps} optimiser steps per run" if sweep.steps else "the bundle's epochs"
    tested = f"test set of {rows[0]['n_test'] if rows else '?'} cases" if sweep.test else "no test evaluation"
    return [results, output / "curves.csv", output / "classes.csv",
            *render(results, title=f"{output.name}: {budget_line}, {tested}")]
