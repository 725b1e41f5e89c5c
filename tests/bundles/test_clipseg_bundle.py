"""The CLIPSeg-Telescopic bundle end to end on a few real Kvasir-SEG images, through ``python -m monai.bundle run``.

The real CLIPSeg weights are not available offline, so a bundle override builds the tiny random-weight CLIPSeg of
``tests.models.model_cases.TINY_CLIPSEG`` at 64² (``clipseg_config``): this checks the bundle's plumbing (training,
resume, evaluation, inference, the adapter-only checkpoint), not accuracy.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPSegConfig

from pipeline.cli import EXIT_BAD_INPUT
from pipeline.engine.network import build_network
from tests.models.model_cases import TINY_CLIPSEG, TINY_CLIPSEG_IMAGE

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "clipseg_telescopic_polyp" / "configs"
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736",
       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@pytest.fixture(scope="module")
def tiny_override(tmp_path_factory) -> Path:
    """A bundle config file that swaps the snapshot for the tiny random CLIPSeg."""
    path = tmp_path_factory.mktemp("override") / "tiny_clipseg.json"
    path.write_text(json.dumps({"clipseg_config": {"_target_": "transformers.CLIPSegConfig", **TINY_CLIPSEG},
                                "image_size": TINY_CLIPSEG_IMAGE}))
    return path


def bundle(*configs: str | Path, **overrides) -> subprocess.CompletedProcess:
    files = "[" + ",".join(f"'{CONFIGS / c}'" for c in configs) + "]"
    args = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return subprocess.run(args, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.real_data
def test_train_resume_evaluate_infer_on_real_kvasir(shared_data, tiny_override, tmp_path):
    root = shared_data / "kvasir_seg"
    names = sorted(p.name for p in (root / "images").glob("*.jpg"))[:4]
    case = lambda n: {"image": f"images/{n}", "label": f"masks/{n}"}  # noqa: E731
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [case(n) for n in names[:2]], "validation": [case(names[2])],
                                 "test": [case(names[3])]}))
    common = {"dataset_dir": root, "split": split, "output_dir": tmp_path / "run"}
    run = tmp_path / "run"

    first = bundle("train.json", tiny_override, max_epochs=1, **common)
    assert first.returncode == 0, first.stderr[-3000:]
    model = torch.load(run / "models" / "model.pt", weights_only=True)
    assert model["method"] == "telescopic" and model["options"]["placement"] == "branch"
    assert torch.load(run / "models" / "resume.pt", weights_only=True)["epoch"] == 1
    fresh = build_network("clipseg", method="telescopic", config=CLIPSegConfig(**TINY_CLIPSEG), num_classes=1,
                          prompts=["polyp"], image_size=TINY_CLIPSEG_IMAGE)
    trainable = {name for name, p in fresh.named_parameters() if p.requires_grad}
    assert model["layers"] == fresh.peft_state.layers, "the paper's recipe (layers left to the backbone)"
    assert trainable <= set(model["state_dict"]), "the checkpoint holds every adapter and head tensor"
    assert {n for n in model["state_dict"] if n not in trainable} == {
        "refine.1.running_mean", "refine.1.running_var", "refine.1.num_batches_tracked"}, "plus the CNN's BN stats"

    second = bundle("train.json", tiny_override, max_epochs=2, **common)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "resumed from" in log and "at epoch 1" in log
    assert torch.load(run / "models" / "resume.pt", weights_only=True)["epoch"] == 2

    evaluation = bundle("train.json", tiny_override, "evaluate.json", **common)
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    rows = (run / "eval" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0] == "case,class,dice,iou,hd95,nsd"
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert math.isfinite(summary["1"]["dice"]["mean"])

    inference = bundle("train.json", tiny_override, "inference.json", **common)
    assert inference.returncode == 0, inference.stderr[-3000:]
    stem = Path(names[3]).stem
    mask = Image.open(run / "predictions" / f"{stem}_mask.png")
    source = Image.open(root / "images" / names[3])
    assert mask.size == source.size, "the prediction has the input's geometry"
    assert set(np.unique(np.asarray(mask))) <= {0, 255}


@pytest.mark.slow
def test_missing_or_incomplete_snapshot_ends_with_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    image = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    image.save(tmp_path / "images" / "a.png")
    image.save(tmp_path / "masks" / "a.png")
    split = tmp_path / "split.json"
    case = {"image": "images/a.png", "label": "masks/a.png"}
    split.write_text(json.dumps({"training": [case], "validation": [case]}))
    for checkpoint, message in ((None, "clipseg needs exactly one of checkpoint="),
                                (tmp_path / "images", "missing config.json")):
        overrides = {} if checkpoint is None else {"checkpoint": checkpoint}
        result = bundle("train.json", dataset_dir=tmp_path, split=split, output_dir=tmp_path / "out", **overrides)
        assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last
        assert "Traceback" not in result.stderr


def test_metadata_verifies_offline_against_the_vendored_schema():
    from monai.bundle import verify_metadata

    schema = REPO / "bundles" / "meta_schema_20240725.json"
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))


def test_verify_net_in_out_accepts_the_network(tiny_override):
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=[str(CONFIGS / "train.json"), str(tiny_override)], n=1, device="cpu")
