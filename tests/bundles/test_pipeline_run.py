"""``python -m pipeline run`` and the bundles' own checks on a tiny SYNTHETIC dataset: every bad input is one line
with the same exit status, a run folder belongs to one run, and the polyp bundle resumes bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.cli import EXIT_BAD_INPUT
from tests.bundles.runs import REPO, run_command

BUNDLE = REPO / "bundles" / "litemedsam_dka_polyp"
CONFIGS = BUNDLE / "configs"
SMALL = {"image_size": 64, "val_interval": 1}  # 64-pixel inputs keep a LiteMedSAM step to seconds on a CPU


def pipeline_run(*words) -> subprocess.CompletedProcess:
    """``python -m pipeline run BUNDLE [CONFIG ...] --key value ...``, the short form the users type."""
    return run_command([sys.executable, "-m", "pipeline", "run", *map(str, words)], timeout=900)


def the_one_line(result: subprocess.CompletedProcess) -> str:
    """The run's whole stderr, which must be exactly one ``error:`` line, with the bad-input exit status."""
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Four SYNTHETIC 64-pixel cases in Kvasir layout: 2 train, 1 validation, 1 test."""
    from pipeline.data.demo_data import make_synthetic_kvasir

    folder = tmp_path_factory.mktemp("synthetic")
    make_synthetic_kvasir(folder / "data", n=4, size=64)
    names = sorted(p.name for p in (folder / "data" / "images").iterdir())
    case = lambda n: {"image": f"images/{n}", "label": f"masks/{n}"}  # noqa: E731
    split = folder / "split.json"
    split.write_text(json.dumps({"training": [case(n) for n in names[:2]], "validation": [case(names[2])],
                                 "test": [case(names[3])]}))
    return folder / "data", split


def parsed(*configs: str, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update({key: str(value) if isinstance(value, Path) else value for key, value in overrides.items()})
    return parser


@pytest.mark.slow
def test_a_corrupt_adapter_checkpoint_deep_inside_evaluate_is_one_line(synthetic, tmp_path):
    data, split = synthetic
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"PK\x03\x04 half a checkpoint")
    result = pipeline_run(BUNDLE, "train", "evaluate", "--dataset_dir", data, "--split", split,
                          "--output_dir", tmp_path, "--image_size", 64)
    assert the_one_line(result).startswith(f"error: adapter checkpoint {checkpoint} cannot be read")

    debug = pipeline_run("--debug", BUNDLE, "train", "evaluate", "--dataset_dir", data, "--split", split,
                         "--output_dir", tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr, "--debug keeps the stack trace"


@pytest.mark.slow
def test_an_override_typo_and_a_wrong_type_are_one_line_through_the_cli(synthetic, tmp_path):
    data, split = synthetic
    common = ["--dataset_dir", data, "--split", split, "--output_dir", tmp_path / "out"]
    typo = the_one_line(pipeline_run(BUNDLE, *common, "--max_epoch", 3))
    assert typo == (f"error: unknown override --max_epoch: {CONFIGS / 'train.json'} defines no such key; "
                    "did you mean --max_epochs?")
    wrong = the_one_line(pipeline_run(BUNDLE, *common, "--max_epochs", "abc"))
    assert wrong == "error: max_epochs must be a whole number >= 1 (--max_epochs), got 'abc'"
    assert not (tmp_path / "out").exists(), "nothing was written"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_epochs": "abc"}, "max_epochs must be a whole number >= 1 (--max_epochs), got 'abc'"),
        ({"max_epochs": 0}, "max_epochs must be a whole number >= 1 (--max_epochs), got 0"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1 (--batch_size), got 0"),
        ({"lr": -1.0}, "lr must be a number > 0 (--lr), got -1.0"),
        ({"warmup_steps": -1}, "warmup_steps must be a whole number >= 0 (--warmup_steps), got -1"),
        ({"method_options": {"r": 0}}, "--method_options: dka: r must be a positive integer, got 0"),
        ({"method_options": {"rank": 4}}, "--method_options: dka has no option rank"),
        ({"resume": "maybe"}, "resume must be true or false (--resume), got 'maybe'"),
    ],
)
def test_the_bundles_settings_check_stops_a_bad_value_with_one_line(overrides, message, capsys):
    from pipeline.engine.arguments import BadInput

    with pytest.raises(BadInput) as stop:
        parsed("train.json", **overrides).get_parsed_content("check_settings")
    assert stop.value.code == EXIT_BAD_INPUT
    assert str(stop.value) == capsys.readouterr().err.strip()
    assert message in str(stop.value)


def test_a_run_folder_of_another_split_stops_the_run_unless_told(synthetic, tmp_path, capsys):
    from pipeline.engine.arguments import BadInput

    data, split = synthetic
    other = tmp_path / "other_split.json"
    cases = json.loads(split.read_text())
    other.write_text(json.dumps({**cases, "training": cases["training"][:1]}))
    output = tmp_path / "run"
    parsed("train.json", dataset_dir=data, split=split, output_dir=output).get_parsed_content("run_folder")
    (output / "models").mkdir()
    (output / "models" / "model.pt").write_bytes(b"the first run's model")

    with pytest.raises(BadInput, match=r"^error: output_dir .* belongs to another run \(split: 'sha256:"):
        parsed("train.json", dataset_dir=data, split=other, output_dir=output).get_parsed_content("run_folder")
    assert capsys.readouterr().err.count("\n") == 1
    assert (output / "models" / "model.pt").read_bytes() == b"the first run's model", "nothing replaced"
    parsed("train.json", dataset_dir=data, split=other, output_dir=output,
           overwrite="true").get_parsed_content("run_folder")
    assert not (output / "models" / "model.pt").exists()


@pytest.mark.parametrize("bundle", ["litemedsam_dka_polyp", "sam_slices_dka", "swin_unetr_dka_hippocampus",
                                    "clipseg_telescopic_polyp"])
def test_every_bundle_warms_up_per_iteration_as_its_warmup_steps_say(bundle):
    """The schedule's wiring, not its arithmetic (``tests/engine/test_schedule.py``): ``--warmup_steps`` reaches
    the scheduler, and the scheduler is stepped per iteration (per epoch, a warmup of 10 steps would last 10
    epochs)."""
    from monai.bundle import ConfigParser

    train = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
    assert train["lr_scheduler"]["_target_"] == "pipeline.engine.schedule.warmup_cosine"
    assert train["lr_scheduler"]["warmup_steps"] == "@warmup_steps"
    handler = next(h for h in train["train"]["handlers"] if h["_target_"] == "LrScheduleHandler")
    assert handler["lr_scheduler"] == "@lr_scheduler" and handler["epoch_level"] is False

    parser = ConfigParser({"optimizer": {"_target_": "torch.optim.SGD", "params": [torch.zeros(1)], "lr": 1.0},
                           "max_epochs": 4, "warmup_steps": 5, "train": {"dataloader": list(range(3))},
                           "lr_scheduler": train["lr_scheduler"]})
    parser.get_parsed_content("lr_scheduler")
    assert parser.get_parsed_content("optimizer").param_groups[0]["lr"] == pytest.approx(0.1)


class Killed(Exception):
    """Stands in for ``kill -9`` right after an epoch's state was saved: no other handler runs."""


def train(data, split, output, max_epochs, killed_after=None):
    """A polyp training run in this process; returns its saved resume state."""
    from ignite.engine import Events

    from pipeline.engine.handlers import read_resume_state

    parser = parsed("train.json", dataset_dir=data, split=split, output_dir=output, max_epochs=max_epochs, **SMALL)
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    if killed_after is None:
        trainer.run()
    else:
        @trainer.on(Events.EPOCH_COMPLETED(once=killed_after))
        def kill(_):
            raise Killed

        with pytest.raises(Killed):
            trainer.run()
    return read_resume_state(output / "models" / "resume.pt")


@pytest.mark.slow
def test_polyp_training_killed_and_resumed_equals_training_straight_through(synthetic, tmp_path):
    """Box jitter comes from the prompt transform's own random state: the resume must continue it.

    The kill keeps ``max_epochs``: the cosine learning-rate schedule's length is part of the run."""
    data, split = synthetic
    straight = train(data, split, tmp_path / "straight", max_epochs=2)
    assert train(data, split, tmp_path / "resumed", max_epochs=2, killed_after=1)["epoch"] == 1
    resumed = train(data, split, tmp_path / "resumed", max_epochs=2)
    assert straight["epoch"] == resumed["epoch"] == 2
    differing = [n for n in straight["network"] if not torch.equal(straight["network"][n], resumed["network"][n])]
    assert not differing, f"{len(differing)} of {len(straight['network'])} trainable tensors differ"
    assert straight["best_metric"] == resumed["best_metric"]


@pytest.mark.parametrize(("resume", "continues"), [(None, False), ("true", True)])
def test_only_resume_true_trains_on_a_run_an_early_stop_ended(synthetic, tmp_path, resume, continues):
    """The bundle hands ``--resume`` to its resume state (``tests/engine/test_handlers.py`` tests the behaviour)."""
    from pipeline.engine.handlers import ResumeState

    data, split = synthetic
    overrides = {} if resume is None else {"resume": resume}
    parser = parsed("train.json", dataset_dir=data, split=split, output_dir=tmp_path / "run", **SMALL, **overrides)
    handlers = parser.get_parsed_content("train#handlers")
    (state,) = [handler for handler in handlers if isinstance(handler, ResumeState)]
    assert state.continue_stopped is continues
