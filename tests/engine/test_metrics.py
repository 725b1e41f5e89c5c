"""``CaseMetrics`` on small synthetic label maps, run by a plain ignite engine shaped like MONAI's evaluator, and the
scores and summaries it writes."""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from pipeline.engine.metrics import METRICS, CaseMetrics, distance_unit, score_case, summarise
from pipeline.errors import PipelineError

REPO = Path(__file__).resolve().parents[2]


def _case(name: str, pred: np.ndarray, label: np.ndarray, spacing: tuple[float, ...]) -> dict:
    """One decollated evaluator item: label maps ``(1, *spatial)`` whose affine carries ``spacing``."""
    affine = np.diag([*spacing, 1.0])
    return {
        "pred": MetaTensor(torch.as_tensor(pred[None], dtype=torch.float32), affine=affine),
        "label": MetaTensor(torch.as_tensor(label[None], dtype=torch.float32), affine=affine,
                            meta={"filename_or_obj": name}),
    }


def _evaluate(cases: list[dict], metrics: CaseMetrics, fail_at: int | None = None, workers: list | None = None):
    """Run ``metrics`` over ``cases`` one per iteration, failing at iteration ``fail_at``; ``workers`` receives the
    child processes alive after each iteration."""
    def step(engine: Engine, batch: list[dict]) -> list[dict]:
        if engine.state.iteration == fail_at:
            raise RuntimeError("network failed")
        return [{"pred": item["pred"]} for item in batch]

    engine = Engine(step)
    metrics.attach(engine)
    if workers is not None:
        engine.add_event_handler(Events.ITERATION_COMPLETED,
                                 lambda _: workers.extend(multiprocessing.active_children()))
    engine.run([[case] for case in cases])


def _hand_made_cases() -> list[dict]:
    """Case ``one``: class 1 predicted as 5x5 against a 6x5 reference (Dice 50/55, IoU 25/30), class 2 missed
    (empty prediction). Case ``two``: both classes exactly right."""
    pred, label = np.zeros((20, 20)), np.zeros((20, 20))
    pred[5:10, 5:10] = 1
    label[5:11, 5:10] = 1
    label[14:18, 14:18] = 2
    perfect = label.copy()
    return [_case("one", pred, label, (1.0, 1.0)), _case("two", perfect, label, (1.0, 1.0))]


def test_rows_and_summary_of_a_hand_made_case(tmp_path):
    metrics = CaseMetrics(str(tmp_path), num_classes=3, class_names=["a", "b"], num_workers=0)
    _evaluate(_hand_made_cases(), metrics)
    rows = list(csv.DictReader((tmp_path / "metrics.csv").read_text().splitlines()))
    assert [(r["case"], r["class"]) for r in rows] == [("one", "a"), ("one", "b"), ("two", "a"), ("two", "b")]
    one_a, one_b, two_a, two_b = ({m: float(r[m]) for m in METRICS} for r in rows)
    assert one_a["dice"] == pytest.approx(50 / 55) and one_a["iou"] == pytest.approx(25 / 30)
    assert one_a["hd95"] > 0 and 0 < one_a["nsd"] <= 1
    assert one_b["dice"] == 0 and one_b["iou"] == 0 and np.isnan(one_b["hd95"])
    assert two_a == two_b == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == 2 and summary["nsd_tolerance_mm"] == 2.0
    assert summary["distance_unit"] == "mm", "cases without a photographic file suffix carry their spacing"
    assert summary["a"]["dice"]["mean"] == pytest.approx((50 / 55 + 1) / 2)
    assert summary["b"]["dice"]["mean"] == pytest.approx(0.5)
    assert summary["b"]["hd95"] | {"ci95": None} == {"n": 1, "non_finite": 1, "mean": 0.0, "std": 0.0, "ci95": None}


def test_distance_unit_is_pixels_for_photographic_formats_only():
    assert [distance_unit(name) for name in ("a/frame.JPG", "mask.png", "ct.nii.gz", "series/1.dcm")] == [
        "pixel", "pixel", "mm", "mm"]


def _random_cases(count: int = 6) -> list[dict]:
    """Boxes per class at random places, predictions shifted and grown at random; class 2 is missed in case 1
    and absent from both maps in case 2, so HD95/NSD have NaNs at known places."""
    rng = np.random.default_rng(0)
    cases = []
    for index in range(count):
        pred, label = np.zeros((24, 20, 16)), np.zeros((24, 20, 16))
        for cls in (1, 2):
            corner = rng.integers(1, 8, size=3)
            size = rng.integers(3, 8, size=3)
            label[tuple(slice(c, c + s) for c, s in zip(corner, size, strict=False))] = cls
            corner = corner + rng.integers(-1, 2, size=3)
            pred[tuple(slice(c, c + s + int(rng.integers(0, 3))) for c, s in zip(corner, size, strict=False))] = cls
        if index == 1:
            pred[pred == 2] = 0
        if index == 2:
            pred[pred == 2], label[label == 2] = 0, 0
        cases.append(_case(f"case{index}", pred, label, (1.5, 1.0, 2.0)))
    return cases


def _table(rows: list[dict]) -> tuple[list, np.ndarray]:
    return [(r["case"], r["class"]) for r in rows], np.array([[r[m] for m in METRICS] for r in rows])


def test_worker_processes_give_exactly_the_in_process_scores(tmp_path):
    cases = _random_cases()
    in_process = CaseMetrics(str(tmp_path / "seq"), num_classes=3, num_workers=0)
    _evaluate(cases, in_process)
    parallel, workers = CaseMetrics(str(tmp_path / "par"), num_classes=3, num_workers=2), []
    _evaluate(cases, parallel, workers=workers)
    assert workers, "no worker process ran"

    keys, values = _table(in_process.rows)
    assert keys == [(f"case{i}", c) for i in range(6) for c in ("1", "2")]
    assert np.isnan(values[:, 2]).tolist() == [k in (("case1", "2"), ("case2", "2")) for k in keys]
    reference = [score_case(c["pred"], c["label"], 3) for c in cases]
    np.testing.assert_array_equal(values, [[s[m][cls] for m in METRICS] for s in reference for cls in (0, 1)])
    parallel_keys, parallel_values = _table(parallel.rows)
    assert parallel_keys == keys
    np.testing.assert_array_equal(parallel_values, values)  # NaNs must sit at the same places
    assert (tmp_path / "par" / "metrics.csv").read_text() == (tmp_path / "seq" / "metrics.csv").read_text()


def test_workers_end_when_evaluation_completes_or_fails(tmp_path):
    metrics, completed, failed = CaseMetrics(str(tmp_path), num_classes=3, num_workers=2), [], []
    _evaluate(_random_cases(2), metrics, workers=completed)
    assert completed and not any(w.is_alive() for w in completed)

    with pytest.raises(RuntimeError, match="network failed"):
        _evaluate(_random_cases(4), metrics, fail_at=3, workers=failed)
    assert failed and not any(w.is_alive() for w in failed)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan's exit is reaped by init, possibly late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' parent-death signal is Linux's")
def test_workers_die_with_an_evaluation_killed_from_outside(tmp_path):
    """As by the OOM killer: SIGKILL leaves no handler to end the pool, so the workers must end themselves."""
    script = ("import sys, time\n"
              "from pipeline.engine.metrics import CaseMetrics\n"
              "metrics = CaseMetrics(sys.argv[1], num_classes=2, num_workers=2)\n"
              "metrics.start()\n"
              "metrics._pool.submit(int).result()\n"
              "print(*metrics._pool._processes, flush=True)\n"
              "time.sleep(600)\n")
    evaluation = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
    try:
        workers = [int(pid) for pid in evaluation.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(pid) for pid in workers)
    finally:
        evaluation.kill()
        evaluation.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # not left behind when the check fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "orphaned workers hold the killed evaluation's memory"


def test_only_rank_0_scores_and_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    metrics, workers = CaseMetrics(str(tmp_path / "eval"), num_classes=3, num_workers=2), []
    _evaluate(_hand_made_cases(), metrics, workers=workers)
    assert workers == []
    assert metrics.rows == [] and not (tmp_path / "eval").exists()


def test_negative_num_workers_is_one_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="num_workers must be 0 .* got -1"):
        CaseMetrics(str(tmp_path), num_classes=2, num_workers=-1)


@pytest.mark.parametrize("bundle", sorted(p.name for p in (REPO / "bundles").iterdir() if p.is_dir()))
def test_training_validation_scores_dice_only(bundle):
    """Model selection during training must stay cheap: ``MeanDice`` alone, no per-case surface metrics."""
    configs = REPO / "bundles" / bundle / "configs"
    train = json.loads((configs / "train.json").read_text())
    key_metric = train["validate"]["key_metric"]
    assert [m["_target_"] for m in key_metric.values()] == ["MeanDice"]
    assert "additional_metrics" not in train["validate"]["evaluator"]
    for name in ("train.json", "multi_gpu_train.json"):
        assert "CaseMetrics" not in (configs / name).read_text()


def test_score_case_matches_hand_computed_dice_and_spacing_scales_hd95():
    pred = torch.zeros(1, 20, 20)
    pred[0, 5:10, 5:10] = 1
    label = torch.zeros(1, 20, 20)
    label[0, 5:11, 5:10] = 1
    scores = score_case(pred, label, num_classes=2, spacing=[1.0, 1.0])
    assert scores["dice"][0] == pytest.approx(2 * 25 / (25 + 30))
    assert scores["iou"][0] == pytest.approx(25 / 30)
    doubled = score_case(pred, label, num_classes=2, spacing=[2.0, 2.0])
    assert doubled["hd95"][0] == pytest.approx(2 * scores["hd95"][0])


def test_summarise_leaves_out_and_counts_non_finite_values():
    summary = summarise([0.5, 0.7, float("nan")])
    assert summary["n"] == 2 and summary["non_finite"] == 1
    assert summary["mean"] == pytest.approx(0.6)
    low, high = summary["ci95"]
    assert low < 0.6 < high and math.isfinite(high)
