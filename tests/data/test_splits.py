"""Few-shot splits: fixed test set, nested training sets, groups kept whole, byte-identical reruns."""

from __future__ import annotations

import argparse

import pytest

from pipeline.data.commands import split as split_command
from pipeline.data.datalist import write_json
from pipeline.data.splits import make_splits
from pipeline.errors import PipelineError

FRACTIONS = [0.0063, 0.0125, 0.025, 0.05, 0.1, 1.0]


def _datalist(patients: int = 80, per_patient: int = 3) -> dict:
    entries = [
        {"image": f"images/p{p:03d}_f{f}.png", "label": f"masks/p{p:03d}_f{f}.png"}
        for p in range(patients)
        for f in range(per_patient)
    ]
    return {"name": "synthetic", "labels": {"0": "background", "1": "polyp"}, "training": entries}


def _images(entries):
    return {e["image"] for e in entries}


def test_test_set_fixed_training_nested_and_non_empty():
    splits = make_splits(_datalist(), seeds=[0, 1, 2], fractions=FRACTIONS, test_fraction=0.2, val_fraction=0.1)
    assert len(splits) == 18
    tests = {frozenset(_images(s["test"])) for s in splits.values()}
    assert len(tests) == 1 and len(next(iter(tests))) == 48
    for seed in (0, 1, 2):
        sets = [_images(splits[f"split_f{f!r}_s{seed}"]["training"]) for f in FRACTIONS]
        assert all(small <= large for small, large in zip(sets, sets[1:], strict=False))
        assert len(sets[0]) >= 1
        split = splits[f"split_f1.0_s{seed}"]
        assert not _images(split["training"]) & _images(split["validation"])
        assert not (_images(split["training"]) | _images(split["validation"])) & _images(split["test"])
    assert _images(splits["split_f0.1_s0"]["training"]) != _images(splits["split_f0.1_s1"]["training"])


def test_group_by_keeps_patients_on_one_side():
    splits = make_splits(_datalist(), seeds=[0], fractions=[0.05, 1.0], test_fraction=0.2, group_by=r"p(\d+)_")
    split = splits["split_f0.05_s0"]
    patients = lambda entries: {e["image"].split("_")[0] for e in entries}  # noqa: E731
    assert not patients(split["training"]) & patients(split["test"])
    assert len(split["training"]) % 3 == 0  # whole patients only
    with pytest.raises(PipelineError, match="does not match images/p000_f0.png"):
        make_splits(_datalist(), seeds=[0], fractions=[1.0], group_by=r"case(\d+)")


def test_k_shot_and_bad_arguments():
    splits = make_splits(_datalist(), seeds=[3], k_shots=[1, 5], test_fraction=0.2)
    assert len(splits["split_k1_s3"]["training"]) == 1 and len(splits["split_k5_s3"]["training"]) == 5
    with pytest.raises(PipelineError, match="--fractions: 1.5"):
        make_splits(_datalist(), seeds=[0], fractions=[1.5])


def test_command_output_is_byte_identical(tmp_path):
    datalist = write_json(_datalist(), tmp_path / "datalist.json")
    outputs = []
    for run in ("a", "b"):
        parser = argparse.ArgumentParser()
        split_command.add_arguments(parser)
        args = parser.parse_args(
            [
                str(datalist), "--fractions", *map(str, FRACTIONS), "--seeds", "0", "1", "2",
                "--test-fraction", "0.2", "-o", str(tmp_path / run),
            ]
        )
        assert split_command.run(args) == 0
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / run).iterdir())})
    assert outputs[0] == outputs[1]
    assert "split_f0.0063_s0.json" in outputs[0] and len(outputs[0]) == 18
