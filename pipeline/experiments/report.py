"""A study's results as a reader needs them: mean and 95 % CI over seeds per cell, a plot, and training curves.

``results.csv`` holds one row per run (:data:`RESULT_FIELDS`), ``curves.csv`` one row per (run, epoch)
(:data:`CURVE_FIELDS`), ``classes.csv`` one row per (run, foreground class) (:data:`CLASS_FIELDS`). Everything here
is rendered from those files alone, so ``python -m pipeline report`` re-renders a study on any machine, from any
copy of its results, without the run folders.

Intervals are Student-t intervals over seeds (few seeds: wide, as they should be), clipped to the metric's range
(:data:`pipeline.engine.metrics.METRIC_BOUNDS`), and every cell shows its ``n``: a cell of one seed has no interval.
A selection sweep's results have no test columns; its report leads with each run's best validation Dice instead.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from pipeline.engine.metrics import METRIC_BOUNDS, summarise
from pipeline.errors import PipelineError

# ``device``: the torch device, and for runs recorded since training.json names it, the machine in brackets
RESULT_FIELDS = ("method", "peft_method", "options", "layers", "fraction", "k_shot", "n_train", "n_test", "seed",
                 "dice", "iou", "hd95", "hd95_unit", "trainable_parameters", "train_seconds", "epochs_run",
                 "iterations_run", "best_val_dice", "device")
CURVE_FIELDS = ("method", "n_train", "seed", "epoch", "iteration", "train_loss", "val_dice")
# one row per (run, foreground class): a multi-class task's mean over classes hides which structure a method misses
CLASS_FIELDS = ("method", "n_train", "seed", "class", "dice", "iou", "hd95", "hd95_unit")
_BOUNDS = {**METRIC_BOUNDS, "best_val_dice": METRIC_BOUNDS["dice"]}
_NUMBERS = {"fraction", "n_train", "n_test", "seed", "dice", "iou", "hd95", "trainable_parameters", "train_seconds",
            "epochs_run", "iterations_run", "best_val_dice", "k_shot", "epoch", "iteration", "train_loss", "val_dice"}


def _number(text: str) -> int | float | None:
    """A CSV cell's number, an integer kept an integer (so that a file read and written again is unchanged)."""
    if text in ("", "None"):
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_rows(path: str | Path, fields: tuple[str, ...] = RESULT_FIELDS) -> list[dict]:
    """The rows of a results (or curves) file, numbers as floats; a file missing a column is refused."""
    path = Path(path)
    try:
        with path.open(newline="") as stream:
            reader = csv.DictReader(stream)
            missing = sorted(set(fields) - set(reader.fieldnames or ()))
            if missing:
                raise PipelineError(f"{path} is not a study results file: it lacks the columns {missing}")
            rows = list(reader)
    except OSError as error:
        raise PipelineError(f"{path} cannot be read ({error.strerror})") from None
    for row in rows:
        for key in _NUMBERS & set(row):
            try:
                row[key] = _number(row[key])
            except ValueError:
                raise PipelineError(f"{path}: column {key} holds {row[key]!r}, not a number") from None
    return rows


def write_rows(rows: list[dict], path: Path, fields: tuple[str, ...]) -> Path:
    """``rows`` as CSV, written whole or not at all (a merge may write over one of its own inputs)."""
    from pipeline.peft.checkpoint import atomic_write

    def write(binary):
        stream = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        writer = csv.DictWriter(stream, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        stream.flush()
        stream.detach()

    return atomic_write(path, write)


def _same(row: dict, other: dict) -> bool:
    """Equal rows, NaN equal to NaN (an undefined HD95 reads back as NaN)."""
    return row.keys() == other.keys() and all(
        a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
        for a, b in ((row[k], other[k]) for k in row))


RUN_KEY = ("method", "n_train", "seed")
"""What names one run in a study's results: its method label, training-set size and seed."""


def run_key(row: dict) -> tuple:
    """The :data:`RUN_KEY` of a results, curves or classes row."""
    return tuple(row[field] for field in RUN_KEY)


def _rows_by_run(path: Path, fields: tuple[str, ...]) -> defaultdict[tuple, list[dict]]:
    """The rows of the curves or classes file ``path`` grouped by :func:`run_key`; none where there is no file."""
    grouped = defaultdict(list)
    for row in read_rows(path, fields) if path.is_file() else []:
        grouped[run_key(row)].append(row)
    return grouped


SAME_STUDY = ("peft_method", "options", "layers", "n_test", "hd95_unit")
"""What a method label must mean identically in every results file merged into one table."""


def merge(inputs: list[str | Path], output: str | Path) -> list[Path]:
    """``results.csv``, ``curves.csv`` and ``classes.csv`` in ``output``: one study run in parts on machines that do
    not keep each other's run folders (CPU sessions, a lent GPU), merged from each input ``results.csv`` and the
    ``curves.csv`` and ``classes.csv`` beside it.

    A silent mix of different studies would be a wrong table, so merging refuses, naming both files: a method label
    that means another configuration or test set in another file (:data:`SAME_STUDY`), and a run (:data:`RUN_KEY`)
    that two files hold with different numbers; the same run collected twice is kept once. ``output`` may be one of
    the inputs' folders (the published copy growing), never a folder whose results file is not an input, since
    that file would be lost.
    """
    inputs = [Path(path).resolve() for path in inputs]
    output = Path(output)
    target = (output / "results.csv").resolve()
    if target.is_file() and target not in inputs:
        raise PipelineError(f"{target} exists and is not one of the files merged: give it as an input or choose "
                            "another --output")
    runs: dict[tuple, tuple[Path, dict]] = {}
    meaning: dict[str, tuple[Path, dict]] = {}
    curves: dict[tuple, list[dict]] = {}
    classes: dict[tuple, list[dict]] = {}
    for path in inputs:
        curves_here = _rows_by_run(path.parent / "curves.csv", CURVE_FIELDS)
        classes_here = _rows_by_run(path.parent / "classes.csv", CLASS_FIELDS)
        for row in read_rows(path):
            key = run_key(row)
            first, seen = meaning.setdefault(row["method"], (path, row))
            differs = [field for field in SAME_STUDY if seen[field] != row[field]]
            if differs:
                raise PipelineError(f"method {row['method']} is another run in {first} than in {path} "
                                    f"({', '.join(f'{f}: {seen[f]!r} vs {row[f]!r}' for f in differs)})")
            if key in runs:
                if not _same(runs[key][1], row):
                    raise PipelineError(f"{runs[key][0]} and {path} both hold {row['method']} on "
                                        f"{row['n_train']:g} cases, seed {row['seed']:g}, with different results: "
                                        "remove one of the two rows")
                continue
            runs[key] = (path, row)
            curves[key], classes[key] = curves_here[key], classes_here[key]
    order = {method: index for index, method in enumerate(dict.fromkeys(key[0] for key in runs))}
    keys = sorted(runs, key=lambda key: (order[key[0]], key[1], key[2]))
    output.mkdir(parents=True, exist_ok=True)
    return [write_rows([runs[key][1] for key in keys], target, RESULT_FIELDS),
            write_rows([row for key in keys for row in curves[key]], output / "curves.csv", CURVE_FIELDS),
            write_rows([row for key in keys for row in classes[key]], output / "classes.csv", CLASS_FIELDS)]


def cell(values: list[float], metric: str) -> dict:
    """:func:`summarise` of one cell's per-seed values, clipped to ``metric``'s range."""
    return summarise([v for v in values if v is not None], _BOUNDS[metric])


def _format(summary: dict, digits: int, signed: bool = False) -> str:
    if summary["mean"] is None:
        return "–"
    spec = f"{'+' if signed else ''}.{digits}f"
    if summary["n"] == 1:
        return f"{summary['mean']:{spec}} (n=1)"
    low, high = summary["ci95"]
    return f"{summary['mean']:{spec}} [{low:{spec}}, {high:{spec}}] (n={summary['n']})"


def _grid(rows: list[dict]) -> tuple[list[str], list[int]]:
    methods = list(dict.fromkeys(row["method"] for row in rows))
    sizes = sorted({int(row["n_train"]) for row in rows})
    return methods, sizes


def table(rows: list[dict], metric: str = "dice", digits: int = 3) -> str:
    """Markdown: one row per method, one column per training-set size, mean [95 % CI] (n seeds)."""
    methods, sizes = _grid(rows)
    unit = {"hd95": f" ({rows[0].get('hd95_unit') or 'unit unknown'})"}.get(metric, "") if rows else ""
    lines = [f"| {metric}{unit} | " + " | ".join(f"{n} cases" for n in sizes) + " |",
             "|" + " --- |" * (len(sizes) + 1)]
    for method in methods:
        cells = [_format(cell([r[metric] for r in rows if r["method"] == method and r["n_train"] == n], metric),
                         digits) for n in sizes]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired(rows: list[dict], metric: str = "dice", digits: int = 3) -> str:
    """Markdown: each method's ``metric`` minus the first method's (the baseline: the first in the sweep config),
    paired by training-set size and seed, mean [95 % t-interval] (n pairs); empty with one method.

    A seed fixes the split, and which cases a split holds moves every method's score the same way: pairing by seed
    takes that spread out of the comparison, where the per-method intervals of :func:`table` keep it. A pair exists
    only where both methods ran.
    """
    methods, sizes = _grid(rows)
    if len(methods) < 2:
        return ""
    baseline = methods[0]
    low, high = _BOUNDS[metric]
    scores = {(r["method"], r["n_train"], r["seed"]): r[metric] for r in rows if r[metric] is not None}
    lines = [f"| {metric} − {baseline}, same seed | " + " | ".join(f"{n} cases" for n in sizes) + " |",
             "|" + " --- |" * (len(sizes) + 1)]
    for method in methods[1:]:
        cells = []
        for n in sizes:
            pairs = [(score, scores[(baseline, size, seed)]) for (m, size, seed), score in scores.items()
                     if m == method and size == n and (baseline, size, seed) in scores]
            cells.append(_format(summarise([a - b for a, b in pairs], (low - high, high - low)), digits, signed=True))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def costs(rows: list[dict]) -> str:
    """Markdown: per method, its trainable parameters, and per training-set size the mean steps and minutes run."""
    methods, sizes = _grid(rows)
    lines = ["| method | trainable parameters | " + " | ".join(f"{n} cases: steps, min" for n in sizes) + " |",
             "|" + " --- |" * (len(sizes) + 2)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        params = {int(r["trainable_parameters"]) for r in mine if r["trainable_parameters"] is not None}
        cells = []
        for n in sizes:
            runs = [r for r in mine if r["n_train"] == n and r["train_seconds"] is not None]
            if not runs:
                cells.append("–")
                continue
            steps = sum(r["iterations_run"] for r in runs) / len(runs)
            minutes = sum(r["train_seconds"] for r in runs) / len(runs) / 60
            cells.append(f"{steps:.0f}, {minutes:.1f}")
        lines.append(f"| {method} | {', '.join(f'{p:,}' for p in sorted(params))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_class(classes: list[dict]) -> str:
    """Markdown: the Dice and HD95 tables of each foreground class; empty for a single-class task, whose one
    class is the main table already."""
    names = list(dict.fromkeys(row["class"] for row in classes))
    if len(names) < 2:
        return ""
    sections = []
    for name in names:
        mine = [row for row in classes if row["class"] == name]
        sections.append(f"\n## {name}\n\n" + table(mine, "dice") + "\n" + table(mine, "hd95", 1))
    return "\nPer class (the main tables average them):\n" + "".join(sections)


def unstarted(rows: list[dict]) -> str:
    """Markdown: the runs whose best validation Dice stayed 0, or an empty string. Such a model never overlapped a
    validation label (a prompt-free head can stay at its all-background start for a whole budget): its score says
    the method did not start on that split, which the cell's mean alone would pass off as learning worse."""
    runs = [f"{r['method']} at {r['n_train']} cases, seed {r['seed']}" for r in rows if r["best_val_dice"] == 0]
    if not runs:
        return ""
    return "\nNever started (best validation Dice 0, no validation label overlapped): " + "; ".join(runs) + ".\n"


def headline(rows: list[dict]) -> str:
    """The metric a report leads with: the test Dice, or in a selection sweep (no run tested) the best validation
    Dice of each run."""
    return "dice" if any(row["dice"] is not None for row in rows) else "best_val_dice"


def markdown(rows: list[dict], title: str = "Results", classes: list[dict] = ()) -> str:
    devices = sorted({r["device"] for r in rows if r.get("device")})
    metric = headline(rows)
    if metric == "dice":
        what, tables = "Test Dice", table(rows, "dice") + "\n" + table(rows, "hd95", 1)
    else:
        what, tables = "Best validation Dice of each run (no test evaluation)", table(rows, "best_val_dice")
    differences = paired(rows, metric)
    if differences:
        differences = ("\nEach method minus the first on the same split (paired by seed), mean [95 % t-interval] "
                       "(n pairs):\n\n" + differences)
    return (f"# {title}\n\n{what}, mean [95 % t-interval over seeds, clipped to 0–1] (n seeds). "
            f"Runs on: {', '.join(devices) or 'unknown'}.\n\n" + tables + unstarted(rows) + differences
            + "\nTraining cost per run (mean over seeds):\n\n" + costs(rows) + per_class(list(classes)))


def plot(rows: list[dict], path: Path, metric: str = "dice") -> Path:
    """``metric`` (a test metric, or ``best_val_dice``) against the number of training cases (images or volumes),
    one line per method, its 95 % CI as a band and as whiskers. Each method's points are shifted a little along the
    (log) axis, so that overlapping intervals stay apart, and a single training-set size still shows them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, sizes = _grid(rows)
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for index, method in enumerate(methods):
        dodge = 1.04 ** (index - (len(methods) - 1) / 2)
        xs, means, lows, highs = [], [], [], []
        for n in sizes:
            summary = cell([r[metric] for r in rows if r["method"] == method and r["n_train"] == n], metric)
            if summary["mean"] is None:
                continue
            xs.append(n * dodge)
            means.append(summary["mean"])
            lows.append(summary["ci95"][0])
            highs.append(summary["ci95"][1])
        if xs:
            (line,) = axes.plot(xs, means, marker="o", label=method)
            axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
            axes.errorbar(xs, means, yerr=[[m - low for m, low in zip(means, lows, strict=True)],
                                           [high - m for m, high in zip(means, highs, strict=True)]],
                          fmt="none", ecolor=line.get_color(), capsize=3, alpha=0.7)
    axes.set_xscale("log")
    axes.set_xticks(sizes, [str(n) for n in sizes])
    axes.minorticks_off()  # a log axis over a narrow range would label its minor ticks (4.6e0, ...)
    axes.set_xlabel("training cases")
    axes.set_ylabel("best validation Dice" if metric == "best_val_dice" else f"test {metric}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def plot_curves(curves: list[dict], path: Path) -> Path:
    """Validation Dice against optimiser steps, one panel per training-set size, one colour per method (a thin
    line per seed): a method that never left 0 is seen as such. One legend beside the panels names every method's
    colour, also those that ran at some sizes only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    methods, sizes = _grid(curves)
    figure, panels = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes) + 1.4, 3.6), dpi=110, squeeze=False,
                                  layout="constrained")
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for panel, n in zip(panels[0], sizes, strict=True):
        runs = defaultdict(list)
        for row in curves:
            if row["n_train"] == n and row["val_dice"] is not None:
                runs[(row["method"], row["seed"])].append((row["iteration"], row["val_dice"]))
        for (method, _), points in sorted(runs.items(), key=lambda item: (methods.index(item[0][0]), item[0][1])):
            points.sort()
            panel.plot(*zip(*points, strict=True), color=colours[method], linewidth=1, alpha=0.8)
        panel.set_title(f"{n} training cases")
        panel.set_xlabel("optimiser steps")
        panel.set_ylim(0, 1)
        panel.grid(alpha=0.3)
    panels[0][0].set_ylabel("validation Dice")
    figure.legend(handles=[Line2D([], [], color=colours[m], label=m) for m in methods], loc="outside right center",
                  fontsize=7)
    figure.savefig(path)
    plt.close(figure)
    return path


def render(results: str | Path, title: str = "Results") -> list[Path]:
    """``results.md`` and ``results.png`` beside ``results``, and ``curves.png`` from a ``curves.csv`` beside it;
    a ``classes.csv`` beside it adds each class's tables to ``results.md``."""
    results = Path(results)
    rows = read_rows(results)
    if not rows:
        raise PipelineError(f"{results} holds no runs yet")
    folder = results.parent
    classes_path = folder / "classes.csv"
    classes = read_rows(classes_path, CLASS_FIELDS) if classes_path.is_file() else []
    written = [folder / "results.md", plot(rows, folder / "results.png", headline(rows))]
    written[0].write_text(markdown(rows, title, classes))
    curves_path = folder / "curves.csv"
    if curves_path.is_file():
        curves = read_rows(curves_path, CURVE_FIELDS)
        if curves:
            written.append(plot_curves(curves, folder / "curves.png"))
    return written


def eta(seconds: float) -> str:
    """``1 h 05 min`` / ``4 min`` / ``35 s``."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"
