"""Self-describing adapter checkpoints: the settings go into model.pt (weights_only), a card beside it, and
evaluate/inference take them from there or stop with one line naming both values."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import pytest
import torch
from monai.bundle import ConfigParser

from pipeline.engine.handlers import AdapterCheckpoint
from pipeline.engine.model_card import adopt_settings, check_model, stored_settings
from pipeline.errors import PipelineError
from pipeline.peft import apply_peft, load_adapter, save_adapter
from tests.peft.backbones import SamViT

SETTINGS = {"backbone": "sam_vit_b", "checkpoint": None, "image_size": 512, "prompt": "none", "num_classes": 3,
            "class_names": ["liver", "tumour"]}


def _model():
    torch.manual_seed(0)
    model = SamViT()
    apply_peft(model, "dka", layers="middle", r=4)
    return model


def test_settings_travel_in_the_checkpoint_and_old_checkpoints_still_load(tmp_path):
    path = save_adapter(_model(), tmp_path / "model.pt", settings={**SETTINGS, "size": (1, 2)})
    payload = torch.load(path, weights_only=True)
    assert payload["settings"] == {**SETTINGS, "size": [1, 2]}
    assert stored_settings(path)["image_size"] == 512
    old = save_adapter(_model(), tmp_path / "old.pt")
    assert "settings" not in torch.load(old, weights_only=True) and stored_settings(old) == {}
    load_adapter(SamViT(), path)
    check_model(old, {"image_size": 1024})  # nothing stored: nothing to contradict


def test_a_conflicting_setting_is_one_error_naming_both_values(tmp_path):
    path = save_adapter(_model(), tmp_path / "model.pt", settings=SETTINGS)
    check_model(path, dict(SETTINGS))
    with pytest.raises(PipelineError, match=r"model.pt was trained with image_size 512, but this run has image_size "
                                             r"1024 \(--image_size\)"):
        check_model(path, {**SETTINGS, "image_size": 1024})
    with pytest.raises(PipelineError, match=r"class_names \['liver', 'tumour'\], but this run has class_names"):
        check_model(path, {**SETTINGS, "class_names": ["liver"]})


def test_run_takes_every_setting_the_line_leaves_out_from_the_checkpoint(tmp_path):
    save_adapter(_model(), tmp_path / "models" / "model.pt", settings=SETTINGS)
    parser = ConfigParser({"output_dir": "runs/x", "image_size": 1024, "num_classes": 2,
                           "model_settings": {"image_size": "@image_size", "num_classes": "@num_classes"},
                           "network_def": {"_target_": "torch.nn.Identity",
                                           "adapter": "$@output_dir + '/models/model.pt'"}})
    adopted = adopt_settings(parser, {"output_dir": str(tmp_path)})
    assert adopted == {"output_dir": str(tmp_path), **SETTINGS}
    assert adopt_settings(parser, {"output_dir": str(tmp_path), "num_classes": 3})["image_size"] == 512
    with pytest.raises(PipelineError, match=r"trained with num_classes 3, but this run has num_classes 2"):
        adopt_settings(parser, {"output_dir": str(tmp_path), "num_classes": 2})
    assert adopt_settings(parser, {"output_dir": str(tmp_path / "none")}) == {"output_dir": str(tmp_path / "none")}
    training = ConfigParser({"output_dir": "x", "model_settings": {}, "network_def": {"_target_": "torch.nn.Identity"}})
    assert adopt_settings(training, {"output_dir": str(tmp_path)}) == {"output_dir": str(tmp_path)}


def test_the_checkpoint_handler_writes_the_card_beside_the_model(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"backbone")
    settings = {**SETTINGS, "checkpoint": str(weights)}
    data = {"training": [{}] * 5, "validation": [{}] * 2, "test": [{}] * 3}
    handler = AdapterCheckpoint(_model(), str(tmp_path / "models" / "model.pt"), settings, data, "split.json")
    state = SimpleNamespace(best_metric_epoch=3, epoch=3, metrics={"val_mean_dice": 0.91})
    handler(SimpleNamespace(state=state))
    card = json.loads((tmp_path / "models" / "model.json").read_text())
    assert card["method"] == "dka" and card["options"]["r"] == 4 and card["layers"] == [2, 3], "the middle blocks"
    assert card["backbone"] == {"name": "sam_vit_b", "weights": str(weights),
                                "weights_sha256": hashlib.sha256(b"backbone").hexdigest()}
    assert card["classes"] == {"num_classes": 3, "class_names": ["liver", "tumour"]}
    assert card["training_data"] == {"cases": {"training": 5, "validation": 2, "test": 3}, "split_file": "split.json"}
    assert card["metrics_at_save"] == {"val_mean_dice": 0.91, "epoch": 3}
    assert card["trained_tensors"]["parameters"] > 0
    assert stored_settings(tmp_path / "models" / "model.pt") == settings
    state.epoch = 4  # no improvement: nothing rewritten
    (tmp_path / "models" / "model.json").unlink()
    handler(SimpleNamespace(state=state))
    assert not (tmp_path / "models" / "model.json").exists()
