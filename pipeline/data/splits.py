"""Reproducible few-shot splits of a datalist.

Guarantees (tested): one test set for every fraction and seed; for a seed, a smaller fraction's training set is a
subset of a larger one's (few-shot curves compare like with like); at least one training case; ``group_by`` keeps all
cases of a patient or video sequence on one side; the same inputs give byte-identical files.

Orderings come from SHA-256 of ``"<seed>:<group>"`` rather than a random generator, so they do not depend on the
NumPy or Python version and a group keeps its rank when other groups are added or removed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from pipeline.errors import PipelineError

__all__ = ["make_splits", "split_name"]

TEST_SEED = "test"
"""The test set is drawn with this fixed key, independent of the training seeds."""


def _rank(key: str, group: str) -> str:
    return hashlib.sha256(f"{key}:{group}".encode()).hexdigest()


def _groups(entries: Sequence[dict], group_by: str | None) -> dict[str, list[dict]]:
    pattern = re.compile(group_by) if group_by else None
    groups: dict[str, list[dict]] = {}
    for entry in entries:
        key = entry["image"]
        if pattern is not None:
            match = pattern.search(entry["image"])
            if match is None:
                raise PipelineError(f"--group-by {group_by!r} does not match {entry['image']}")
            key = match.group(1) if match.groups() else match.group(0)
        groups.setdefault(key, []).append(entry)
    return groups


def _take(ordered: list[str], groups: dict[str, list[dict]], count: int) -> list[str]:
    """Leading groups of ``ordered`` until they hold at least ``count`` cases."""
    taken, total = [], 0
    for group in ordered:
        if total >= count:
            break
        taken.append(group)
        total += len(groups[group])
    return taken


def _cases(names: list[str], groups: dict[str, list[dict]]) -> list[dict]:
    return [entry for name in sorted(names) for entry in groups[name]]


def split_name(seed: int, fraction: float | None = None, k_shot: int | None = None) -> str:
    """File stem: ``split_f0.0125_s0`` or ``split_k5_s0``."""
    return f"split_k{k_shot}_s{seed}" if k_shot is not None else f"split_f{fraction!r}_s{seed}"


def make_splits(
    datalist: dict,
    seeds: Sequence[int],
    fractions: Sequence[float] = (),
    k_shots: Sequence[int] = (),
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    group_by: str | None = None,
) -> dict[str, dict]:
    """Split ``datalist["training"]`` into one ``{training, validation, test}`` datalist per (fraction or k, seed).

    ``fractions`` are of the cases left after test and validation (at least one case); ``k_shots`` count cases.
    """
    entries = list(datalist.get("training", []))
    if not entries:
        raise PipelineError("datalist has no 'training' entries to split")
    for fraction in fractions:
        if not 0 < fraction <= 1:
            raise PipelineError(f"--fractions: {fraction} is not in (0, 1]")
    for k in k_shots:
        if k < 1:
            raise PipelineError(f"--k-shot: {k} must be at least 1")
    if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise PipelineError(
            f"--test-fraction {test_fraction} and --val-fraction {val_fraction} must leave training cases"
        )
    groups = _groups(entries, group_by)
    test = _take(sorted(groups, key=lambda g: _rank(TEST_SEED, g)), groups, math.ceil(test_fraction * len(entries)))
    if len(test) == len(groups):
        raise PipelineError(f"--test-fraction {test_fraction} leaves no group for training ({len(groups)} groups)")
    rest = [g for g in groups if g not in set(test)]
    rest_cases = sum(len(groups[g]) for g in rest)
    common = {key: datalist[key] for key in ("name", "modality", "labels") if key in datalist}
    splits = {}
    for seed in seeds:
        ordered = sorted(rest, key=lambda g: _rank(str(seed), g))
        validation = _take(ordered, groups, math.ceil(val_fraction * rest_cases)) if val_fraction > 0 else []
        if len(validation) == len(ordered):
            raise PipelineError(f"--val-fraction {val_fraction} leaves no group for training")
        pool = ordered[len(validation):]
        pool_cases = sum(len(groups[g]) for g in pool)
        requests = [(f, None, max(1, round(f * pool_cases))) for f in fractions] + [(None, k, k) for k in k_shots]
        for fraction, k_shot, count in requests:
            if k_shot is not None and k_shot > pool_cases:
                raise PipelineError(f"--k-shot {k_shot}: only {pool_cases} training cases after test/validation")
            training = _take(pool, groups, count)
            splits[split_name(seed, fraction, k_shot)] = {
                **common,
                "seed": seed,
                "fraction": fraction,
                "k_shot": k_shot,
                "test_fraction": test_fraction,
                "val_fraction": val_fraction,
                "group_by": group_by,
                "numTraining": sum(len(groups[g]) for g in training),
                "training": _cases(training, groups),
                "validation": _cases(validation, groups),
                "test": _cases(test, groups),
            }
    return splits
