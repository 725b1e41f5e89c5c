"""``tools/head_collapse.py`` on the shipped LiteMedSAM and a SYNTHETIC image: the prompt-free start has no logit
gap at all (every class is the same token), a moved foreground token gives one, and the run's last state, not its
best, is read with ``--last``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.engine.network import build_network
from pipeline.peft.checkpoint import save_adapter, trainable_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import head_collapse  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A prompt-free linear-probe run folder: model.pt at the start, resume.pt with the foreground token moved."""
    folder = tmp_path_factory.mktemp("run")
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 200  # SYNTHETIC
    Image.fromarray(image).save(folder / "synthetic.png")
    (folder / "split.json").write_text(json.dumps({"validation": [{"image": str(folder / "synthetic.png")}]}))
    model = build_network("litemedsam", method="linear_probe", prompt="none", num_classes=2)
    (folder / "models").mkdir()
    save_adapter(model, folder / "models" / "model.pt",
                 settings={"backbone": "litemedsam", "checkpoint": "shipped", "prompt": "none", "num_classes": 2})
    state = trainable_state_dict(model)
    tokens = state["mask_decoder.mask_tokens.weight"]
    tokens[1] += torch.linspace(-1, 1, tokens.shape[1])
    torch.save({"network": state, "epoch": 1, "trainer": {}, "optimizer": {}, "rng": {}},
               folder / "models" / "resume.pt")
    return folder


def test_the_start_has_no_logit_gap_and_a_moved_foreground_token_has_one(run, capsys):
    assert head_collapse.main([str(run), "--last"]) == 0
    shipped, last = capsys.readouterr().out.splitlines()
    assert shipped.startswith("shipped decoder: logit gap spatial std 0.000,") and "upscaled features" in shipped
    gap = f"{run}: logit gap spatial std "
    assert last.startswith(gap) and not last.startswith(gap + "0.000")

    assert head_collapse.main([str(run)]) == 0  # the best state: model.pt, the start
    assert capsys.readouterr().out.splitlines()[1] == f"{run}: " + shipped.split(": ", 1)[1]
