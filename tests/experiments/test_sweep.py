"""The few-shot sweep's orchestration: splits, commands, budgets, skipping finished runs, failures, the results.

The bundle runs themselves are replaced by a stand-in that writes a summary.json (the bundles have their own
end-to-end tests); what is tested here is that the sweep runs each (method, split) once, in the right order, with
the right overrides, and tabulates what the runs wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.engine.handlers import with_resolved_options
from pipeline.errors import PipelineError
from pipeline.experiments import sweep as sweep_module
from pipeline.experiments.report import read_rows
from pipeline.experiments.sweep import (
    Sweep,
    budget,
    collect,
    foreground_mean,
    planned_run,
    run_one,
    write_results,
    write_splits,
)


@pytest.fixture
def synthetic_folder(tmp_path) -> Path:
    """Ten SYNTHETIC image/mask pairs in Kvasir layout."""
    for i in range(10):
        for sub, mode in (("images", "RGB"), ("masks", "L")):
            (tmp_path / "data" / sub).mkdir(parents=True, exist_ok=True)
            array = np.zeros((8, 8, 3) if mode == "RGB" else (8, 8), np.uint8)
            array[2:6, 2:6] = 255
            Image.fromarray(array, mode).save(tmp_path / "data" / sub / f"synthetic_{i}.png")
    return tmp_path / "data"


@pytest.fixture
def config(tmp_path, synthetic_folder) -> Sweep:
    text = f"""
bundle: bundles/litemedsam_dka_polyp
dataset_dir: {synthetic_folder}
output: {tmp_path / 'sweep'}
fractions: [0.2, 1.0]
seeds: [0, 1]
methods: {{dka: {{r: 8}}, linear_probe: }}
overrides: {{max_epochs: 3}}
"""
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return Sweep.load(path)


POLYP_WARMUP_STEPS = sweep_module.train_config("bundles/litemedsam_dka_polyp")["warmup_steps"]


def fake_bundle(calls, dice_by_method, classes=("1",)):
    """Stands in for the bundle: training writes a run.json and a training.json, evaluation a summary.json (class
    ``k`` of ``classes`` scoring the method's Dice minus ``0.1 k``)."""

    def run(command, stdout=None, stderr=None):
        calls.append(command)
        args = dict(zip(command[6::2], command[7::2], strict=False))
        run_dir = Path(args["--output_dir"])
        method = run_dir.parent.name
        if command[5].endswith("evaluate.json']"):
            summary = run_dir / "eval" / "summary.json"
            summary.parent.mkdir(parents=True)
            summary.write_text(json.dumps({
                "0": {"dice": {"mean": 0.99}}, "distance_unit": "pixel",
                **{name: {"dice": {"mean": dice_by_method[method] - 0.1 * k}, "iou": {"mean": 0.5},
                          "hd95": {"mean": 7.0 + k}} for k, name in enumerate(classes)}}))
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            fingerprint = with_resolved_options({  # as the bundle records it: the options resolved
                "method": args["--method"], "method_options": json.loads(args["--method_options"]),
                "dataset_dir": args["--dataset_dir"], "checkpoint": args.get("--checkpoint"),
                "lr": float(args["--lr"]) if "--lr" in args else 1e-4,
                "warmup_steps": int(args.get("--warmup_steps", POLYP_WARMUP_STEPS))})
            (run_dir / "run.json").write_text(json.dumps({"fingerprint": fingerprint}))
            record = {"trainable_parameters": 123, "train_seconds": 60.0, "epochs_run": 2, "iterations_run": 4,
                      "best_val_metric": 0.7, "device": "cpu", "completed": True,
                      # a record from before training.json named the machine has only the device
                      **({"machine": "Test CPU, 1 thread, torch 2"} if method == "dka" else {}),
                      "max_epochs": int(args.get("--max_epochs", 20)),
                      "curves": [{"epoch": e, "iteration": 2 * e, "train_loss": 1.0 / e, "val_metric": 0.3 * e}
                                 for e in (1, 2)]}
            (run_dir / "training.json").write_text(json.dumps(record))
        return subprocess.CompletedProcess(command, 0)

    return run


def test_sweep_runs_each_method_and_split_once_and_tabulates(config, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8, "linear_probe": 0.6}))
    splits = write_splits(config)
    assert sorted(splits) == ["split_f0.2_s0", "split_f0.2_s1", "split_f1.0_s0", "split_f1.0_s1"]
    for name, path in splits.items():
        for method in config.methods:
            run_one(config, method, name, path)
    assert len(calls) == 2 * 4 * 2, "train + evaluate per method and split"
    train = calls[0]
    assert train[5] == "['bundles/litemedsam_dka_polyp/configs/train.json']"
    args = dict(zip(train[6::2], train[7::2], strict=False))
    assert args["--method"] == "dka" and json.loads(args["--method_options"]) == {"r": 8}
    assert args["--max_epochs"] == "3" and args["--split"].endswith("split_f0.2_s0.json")
    evaluate = dict(zip(calls[1][6::2], calls[1][7::2], strict=False))
    assert args["--cache_dir"] == evaluate["--cache_dir"] == str(Path(config.output) / "cache"), \
        "every run of a sweep shares one frozen-prefix cache"

    for name, path in splits.items():  # a second pass finds every summary and runs nothing
        run_one(config, "dka", name, path)
    assert len(calls) == 16

    rows, curves, classes = collect(config, splits)
    assert {(r["method"], r["fraction"], r["seed"]) for r in rows} == {
        (m, f, s) for m in ("dka", "linear_probe") for f in (0.2, 1.0) for s in (0, 1)}
    assert {r["n_train"] for r in rows if r["fraction"] == 0.2} == {2}
    assert {(r["method"], r["device"]) for r in rows} == {
        ("dka", "cpu (Test CPU, 1 thread, torch 2)"), ("linear_probe", "cpu")}
    dka = next(r for r in rows if r["method"] == "dka")
    assert (dka["peft_method"], json.loads(dka["options"]), dka["layers"]) == ("dka", {"r": 8}, "middle")
    assert (dka["iou"], dka["hd95"], dka["hd95_unit"], dka["trainable_parameters"], dka["iterations_run"]) == (
        0.5, 7.0, "pixel", 123, 4)
    assert len(curves) == 2 * len(rows) and {c["val_dice"] for c in curves} == {0.3, 0.6}
    assert [(c["class"], c["dice"]) for c in classes] == [("1", r["dice"]) for r in rows], "background left out"
    written = write_results(config, rows, curves, classes)
    assert [p.name for p in written] == ["results.csv", "curves.csv", "classes.csv", "results.md", "results.png",
                                         "curves.png"]
    markdown = (written[0].parent / "results.md").read_text()
    assert "Per class" not in markdown, "one class is the main table already"
    assert "| dka | 0.800 [0.800, 0.800] (n=2) | 0.800 [0.800, 0.800] (n=2) |" in markdown
    assert "| linear_probe | 0.600 [0.600, 0.600] (n=2)" in markdown
    assert "| hd95 (pixel) |" in markdown
    assert len(read_rows(written[0])) == 8


def test_failed_run_names_its_log(config, monkeypatch):
    monkeypatch.setattr(sweep_module.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1))
    name, path = next(iter(write_splits(config).items()))
    with pytest.raises(PipelineError, match=r"run dka/split_f0.2_s0 failed \(exit status 1\); its output is in "
                                            r".*sweep.log"):
        run_one(config, "dka", name, path)
    # a process killed by a signal writes nothing about it; the error names the signal
    monkeypatch.setattr(sweep_module.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, -signal.SIGKILL))
    with pytest.raises(PipelineError, match=r"run dka/split_f0.2_s0 was killed by SIGKILL \(the out-of-memory "
                                            r"killer sends it: run fewer jobs side by side\); its output is in"):
        run_one(config, "dka", name, path)
    monkeypatch.setattr(sweep_module.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, -signal.SIGTERM))
    with pytest.raises(PipelineError, match=r"run dka/split_f0.2_s0 was killed by SIGTERM; its output is in"):
        run_one(config, "dka", name, path)


def test_bad_config_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("bundle: b\nmethod: [dka]\n")
    expected = r"unknown keys \['method'\], missing keys \['dataset_dir', 'methods', 'output', 'fractions or k_shots'\]"
    with pytest.raises(PipelineError, match=expected):
        Sweep.load(path)


def test_foreground_mean_averages_foreground_classes_only():
    summary = {"0": {"dice": {"mean": 0.99}}, "1": {"dice": {"mean": 0.8}}, "2": {"dice": {"mean": 0.6}}, "cases": 3}
    assert foreground_mean(summary) == pytest.approx(0.7)


def test_budget_gives_every_training_set_the_same_number_of_steps(config):
    config.steps, config.val_every_steps = 120, 12
    assert budget(config, n_train=5, batch_size=2) == {"max_epochs": 40, "val_interval": 4}
    assert budget(config, n_train=40, batch_size=2) == {"max_epochs": 6, "val_interval": 1}
    assert budget(config, n_train=5, batch_size=2, samples_per_case=8) == {"max_epochs": 6, "val_interval": 1}
    config.steps = None
    assert budget(config, n_train=5, batch_size=2) == {}


def test_a_slice_bundle_s_budget_counts_the_slices_each_volume_gives_an_epoch(config):
    config.bundle, config.steps, config.val_every_steps = "bundles/sam_slices_dka", 120, 24
    name, path = next(iter(write_splits(config).items()))  # 2 training cases x 8 slices: 8 steps per epoch
    args = dict(zip(*(lambda c: (c[6::2], c[7::2]))(planned_run(config, "dka", name, path)[1][0]), strict=False))
    assert (args["--max_epochs"], args["--val_interval"]) == ("15", "3")


def test_planned_commands_carry_the_step_budget_and_the_variant_settings(config):
    config.steps, config.val_every_steps = 30, 6
    config.methods = {"dka_top": {"method": "dka", "layers": "top", "kernel_size": 31,
                                  "overrides": {"adapter_lr": 3e-4}}}
    name, path = next(iter(write_splits(config).items()))  # 2 training images: 1 step per epoch at batch size 2
    train, evaluate = planned_run(config, "dka_top", name, path)[1]
    args = dict(zip(train[6::2], train[7::2], strict=False))
    assert (args["--max_epochs"], args["--val_interval"], args["--layers"]) == ("30", "6", "top")
    assert args["--adapter_lr"] == "0.0003" and args["--method"] == "dka"
    assert json.loads(args["--method_options"]) == {"kernel_size": 31}
    assert dict(zip(evaluate[6::2], evaluate[7::2], strict=False))["--layers"] == "top"


def test_premade_splits_are_used_as_they_are(config, tmp_path):
    made = write_splits(config)
    config.splits = str(next(iter(made.values())).parent)
    config.output = str(tmp_path / "elsewhere")
    assert write_splits(config) == made
    config.fractions = [0.5]
    with pytest.raises(PipelineError, match="split_f0.5_s0.json"):
        write_splits(config)


def test_variants_of_one_method_run_under_their_own_labels(config, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka_zero": 0.9}))
    config.methods = {"dka_zero": {"method": "dka", "init": "zero"}}
    name, path = next(iter(write_splits(config).items()))
    run_dir = run_one(config, "dka_zero", name, path)
    args = dict(zip(calls[0][6::2], calls[0][7::2], strict=False))
    assert args["--method"] == "dka" and json.loads(args["--method_options"]) == {"init": "zero"}
    assert run_dir.parent.name == "dka_zero"


def test_k_shot_training_sets_get_their_own_columns(config, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.7, "linear_probe": 0.5}))
    config.fractions, config.k_shots, config.seeds = [], [1, 3], [0]
    splits = write_splits(config)
    assert sorted(splits) == ["split_k1_s0", "split_k3_s0"]
    for name, path in splits.items():
        run_one(config, "dka", name, path)
    rows, _, _ = collect(config, splits)
    assert sorted((r["k_shot"], r["n_train"], r["fraction"]) for r in rows) == [(1, 1, None), (3, 3, None)]


def test_a_multi_class_task_is_reported_per_class_beside_the_mean(config, monkeypatch):
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run",
                        fake_bundle(calls, {"dka": 0.8}, classes=("anterior", "posterior")))
    config.methods, config.fractions, config.k_shots, config.seeds = {"dka": {}}, [], [2], [0, 1]
    splits = write_splits(config)
    for name, path in splits.items():
        run_one(config, "dka", name, path)
    rows, curves, classes = collect(config, splits)
    assert [r["dice"] for r in rows] == pytest.approx([0.75, 0.75]), "the mean over foreground classes"
    assert sorted((c["class"], c["seed"], round(c["dice"], 3), c["hd95"]) for c in classes) == [
        ("anterior", s, 0.8, 7.0) for s in (0, 1)] + [("posterior", s, 0.7, 8.0) for s in (0, 1)]
    markdown = write_results(config, rows, curves, classes)[3].read_text()
    anterior, posterior = markdown.split("## anterior")[1].split("## posterior")
    assert "| dka | 0.800 [0.800, 0.800] (n=2) |" in anterior and "| dka | 7.0 [7.0, 7.0] (n=2) |" in anterior
    assert "| dka | 0.700 [0.700, 0.700] (n=2) |" in posterior and "| dka | 8.0 [8.0, 8.0] (n=2) |" in posterior


def test_collect_tabulates_the_runs_evaluated_so_far_and_runs_nothing(config, monkeypatch, capsys, tmp_path):
    from pipeline import cli

    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8}))
    name, path = next(iter(write_splits(config).items()))
    run_one(config, "dka", name, path)
    monkeypatch.setattr(sweep_module.subprocess, "run", lambda *a, **k: pytest.fail("--collect ran a bundle"))
    assert cli.main(["sweep", str(tmp_path / "sweep.yaml"), "--collect"]) == 0
    assert "sweep: 8 runs, 1 already done, none run (--collect)" in capsys.readouterr().out
    assert [(r["method"], r["dice"]) for r in read_rows(Path(config.output) / "results.csv")] == [("dka", 0.8)]


def test_a_grid_runs_in_parts_chosen_by_method_size_and_seed(tmp_path, synthetic_folder, monkeypatch, capsys):
    from pipeline import cli

    path = tmp_path / "sweep.yaml"
    path.write_text(f"bundle: bundles/litemedsam_dka_polyp\ndataset_dir: {synthetic_folder}\n"
                    f"output: {tmp_path / 'sweep'}\nk_shots: [1, 3]\nseeds: [0, 1, 2]\n"
                    "methods: {dka: {}, linear_probe: {}}\noverrides: {max_epochs: 3}\n")
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8, "linear_probe": 0.6}))
    assert cli.main(["sweep", str(path), "--methods", "dka", "--k-shots", "3", "--seeds", "2", "0"]) == 0
    assert "sweep: 2 runs, 0 already done, 2 to run" in capsys.readouterr().out
    trained = sorted({Path(dict(zip(c[6::2], c[7::2], strict=False))["--output_dir"]).relative_to(tmp_path / "sweep")
                      for c in calls})
    assert trained == [Path("runs/dka/split_k3_s0"), Path("runs/dka/split_k3_s2")]
    for option, value, named in (("--seeds", "3", "[3]"), ("--k-shots", "5", "[5]"), ("--methods", "lora", "['lora']")):
        assert cli.main(["sweep", str(path), option, value]) == 2
        assert capsys.readouterr().err == f"error: {option} {named} are not in {path}\n"


def _kind(command) -> str:
    return "evaluate" if command[5].endswith("evaluate.json']") else "train"


def test_a_run_killed_during_its_evaluation_is_not_trained_again(config, monkeypatch):
    """Rerunning the training of an early-stopped run would resume it and train it further."""
    calls = []
    name, path = next(iter(write_splits(config).items()))
    fake = fake_bundle(calls, {"dka": 0.8})

    def killed_in_evaluation(command, **kwargs):
        if _kind(command) == "evaluate":
            return subprocess.CompletedProcess(command, -9)
        return fake(command, **kwargs)

    monkeypatch.setattr(sweep_module.subprocess, "run", killed_in_evaluation)
    with pytest.raises(PipelineError):
        run_one(config, "dka", name, path)
    monkeypatch.setattr(sweep_module.subprocess, "run", fake)
    run_one(config, "dka", name, path)
    assert [_kind(c) for c in calls] == ["train", "evaluate"]


def test_a_training_without_its_completion_is_trained_again(config, monkeypatch):
    """A killed training's record never says it completed: rerunning its command resumes it."""
    calls = []
    name, path = next(iter(write_splits(config).items()))
    run_dir = planned_run(config, "dka", name, path)[0]
    run_dir.mkdir(parents=True)
    (run_dir / "training.json").write_text(json.dumps({"epochs_run": 1, "curves": []}))
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8}))
    run_one(config, "dka", name, path)
    assert [_kind(c) for c in calls] == ["train", "evaluate"]


def test_a_selection_sweep_trains_only_and_reports_validation_dice(config, monkeypatch, tmp_path):
    """``test: false``: no test evaluation is run or read (not even one another sweep ran in a shared run folder),
    the tables rank the runs by their best validation Dice, and they go to ``results``, not over the study's."""
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8, "linear_probe": 0.6}))
    splits = write_splits(config)
    name, path = next(iter(splits.items()))
    run_one(config, "dka", name, path)  # the main study evaluates a run the selection grid shares
    record = Path(config.output) / "runs" / "dka" / name / "training.json"
    # a record written before "completed" existed
    record.write_text(record.read_text().replace('"completed": true', '"completed": null'))
    assert [_kind(c) for c in calls] == ["train", "evaluate"]

    selection = Sweep(**{**config.__dict__, "test": False, "results": str(tmp_path / "selection")})
    assert [_kind(c) for c in planned_run(selection, "dka", name, path)[1]] == ["train"], "--dry-run prints these"
    for name, path in splits.items():
        for method in selection.methods:
            run_one(selection, method, name, path)
    assert [_kind(c) for c in calls[2:]] == ["train"] * (2 * 4 - 1), "one training per run, the shared one reused"
    for name, path in splits.items():
        run_one(selection, "dka", name, path)
    assert len(calls) == 2 + 7, "a second pass runs nothing"

    rows, curves, classes = collect(selection, splits)
    assert len(rows) == 8 and classes == []
    assert {(r["dice"], r["iou"], r["hd95"], r["n_test"], r["best_val_dice"]) for r in rows} == {
        (None, None, None, None, 0.7)}
    written = write_results(selection, rows, curves, classes)
    assert {p.parent for p in written} == {tmp_path / "selection"}
    assert not (Path(config.output) / "results.csv").exists(), "the study's tables are not the selection's"
    markdown = (tmp_path / "selection" / "results.md").read_text()
    assert "no test evaluation" in markdown and "Best validation Dice of each run" in markdown
    assert "| dka | 0.700 [0.700, 0.700] (n=2) |" in markdown and "Test Dice" not in markdown
    assert [r["best_val_dice"] for r in read_rows(written[0])] == [0.7] * 8


def test_a_selection_sweep_s_test_key_is_a_flag(tmp_path, synthetic_folder):
    path = tmp_path / "selection.yaml"
    path.write_text(f"bundle: b\ndataset_dir: {synthetic_folder}\noutput: o\nk_shots: [2]\nmethods: {{dka: }}\n"
                    "test: 'false'\n")
    assert Sweep.load(path).test is False
    path.write_text(path.read_text().replace("'false'", "'maybe'"))
    with pytest.raises(PipelineError, match="test"):
        Sweep.load(path)


def test_a_finished_run_of_other_settings_is_refused_not_tabulated(config, monkeypatch):
    """A config edited after its runs finished must not relabel them: the old runs are refused, by name."""
    calls = []
    monkeypatch.setattr(sweep_module.subprocess, "run", fake_bundle(calls, {"dka": 0.8}))
    name, path = next(iter(write_splits(config).items()))
    run_one(config, "dka", name, path)
    run_dir = planned_run(config, "dka", name, path)[0]

    edits = [({"methods": {"dka": {"r": 16}}}, "method_options.r: 8 there, 16 now"),
             ({"overrides": {"max_epochs": 5}}, "max_epochs: 3 there, 5 now"),
             ({"overrides": {"max_epochs": 3, "lr": 1e-3}}, "lr: 0.0001 there, 0.001 now")]
    for edit, message in edits:
        edited = Sweep(**{**config.__dict__, **edit})
        with pytest.raises(PipelineError) as ran:
            run_one(edited, "dka", name, path)
        with pytest.raises(PipelineError) as collected:
            collect(edited, {name: path})
        assert str(ran.value) == str(collected.value) == (
            f"{run_dir} ran with other settings than this sweep asks ({message}): give the sweep another output "
            "folder, or delete that run folder to run it again")
    assert len(calls) == 2, "nothing was run again"

    record = json.loads((run_dir / "run.json").read_text())  # as written before records resolved the options:
    record["fingerprint"]["method_options"] = {"r": 8}       # `dka: {r: 8}` then began from PyTorch's init
    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(PipelineError, match=r"\(method_options.init: 'paper' there, 'zero' now\)"):
        collect(config, {name: path})
    record["fingerprint"]["method_options"] = {"r": 8, "init": "zero"}
    (run_dir / "run.json").write_text(json.dumps(record))
    assert [row["method"] for row in collect(config, {name: path})[0]] == ["dka"]

    del record["fingerprint"]["warmup_steps"]  # as written before the warmup existed: trained without one
    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(PipelineError, match=rf"\(warmup_steps: 0 there, {POLYP_WARMUP_STEPS} now\)"):
        collect(config, {name: path})
    unwarmed = Sweep(**{**config.__dict__, "overrides": {"max_epochs": 3, "warmup_steps": 0}})
    assert [row["method"] for row in collect(unwarmed, {name: path})[0]] == ["dka"]
    record["fingerprint"]["warmup_steps"] = POLYP_WARMUP_STEPS
    (run_dir / "run.json").write_text(json.dumps(record))

    record = json.loads((run_dir / "run.json").read_text())  # a device run: its data and checkpoint were carried
    record["fingerprint"].update(dataset_dir="/device/data", checkpoint="/device/files/encoder.pt")
    (run_dir / "run.json").write_text(json.dumps(record))
    moved = Sweep(**{**config.__dict__, "overrides": {"max_epochs": 3, "checkpoint": "/here/ssl/encoder.pt"}})
    assert [row["method"] for row in collect(moved, {name: path})[0]] == ["dka"]

    bundle = sweep_module.train_config(config.bundle)  # a bundle default the config leaves unsaid changes
    monkeypatch.setattr(sweep_module, "train_config", lambda _: {**bundle, "lr": 1e-3})
    with pytest.raises(PipelineError, match=r"\(lr: 0.0001 there, 0.001 now\)"):
        collect(moved, {name: path})


SWEEP_KILLED_MIDRUN = """
import sys
from pipeline.experiments import sweep as sweep_module
config = sweep_module.Sweep.load(sys.argv[1])
name, path = next(iter(sweep_module.write_splits(config).items()))
training = [sys.executable, "-c", "import os, pathlib, sys, time; "
            "pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(120)", sys.argv[2]]
sweep_module.bundle_command = lambda *args, **kwargs: training
sweep_module.run_one(config, "dka", name, path)
"""


def test_killing_the_sweep_stops_the_run_it_started(config, tmp_path):
    """``kill SWEEP_PID`` must not leave the training it started running on, orphaned, in its run folder."""
    pid_file = tmp_path / "training.pid"
    sweep = subprocess.Popen([sys.executable, "-c", SWEEP_KILLED_MIDRUN, str(tmp_path / "sweep.yaml"), str(pid_file)],
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # the sweep imports the pipeline first: seconds, more on a busy machine
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        training = int(pid_file.read_text())
        sweep.send_signal(signal.SIGTERM)
        _, stderr = sweep.communicate(timeout=60)
        assert sweep.returncode == 128 + signal.SIGTERM
        assert stderr.strip().splitlines()[-1] == ("sweep: stopped by SIGTERM; the run it had started was stopped "
                                                   "too and resumes when the sweep is run again")
        with pytest.raises(ProcessLookupError):
            os.kill(training, 0)  # reaped by the sweep, not left running
    finally:
        sweep.kill()
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
