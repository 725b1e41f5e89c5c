"""Adapter-only checkpoints: small, exact round trip onto a fresh backbone, refusal of foreign checkpoints."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.peft import apply_peft, load_adapter, param_groups, save_adapter, trainable_state_dict
from tests.peft.backbones import SamViT, Swin


def trained(method: str, factory=SamViT, shape=(2, 3, 64, 64), **options):
    torch.manual_seed(0)
    model = factory()
    apply_peft(model, method, **options)
    image = torch.randn(shape)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2))
    model.train()
    for _ in range(2):
        optimizer.zero_grad()
        model(image).square().mean().backward()
        optimizer.step()
    return model.eval(), image


def fresh(factory=SamViT):
    torch.manual_seed(0)
    return factory()


@pytest.mark.parametrize("method", ["dka", "lora", "bitfit", "telescopic", "linear_probe"])
def test_round_trip_reproduces_outputs_exactly(tmp_path, method):
    model, image = trained(method)
    path = save_adapter(model, tmp_path / "adapter.pt")
    restored = load_adapter(fresh(), path).eval()
    with torch.no_grad():
        assert torch.equal(restored(image), model(image))
    payload = torch.load(path, weights_only=True)
    assert set(payload["state_dict"]) == set(trainable_state_dict(model))
    assert payload["method"] == method and payload["backbone"] == "toy_sam_vit"


def test_checkpoint_holds_only_what_trains(tmp_path):
    model, _ = trained("dka")
    path = save_adapter(model, tmp_path / "adapter.pt")
    saved = torch.load(path, weights_only=True)["state_dict"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved) == trainable
    assert all(".adapter." in n or n.startswith("head.") for n in saved)
    backbone_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert path.stat().st_size < backbone_bytes


def test_round_trip_on_3d_swin_with_decomposed_kernels(tmp_path):
    model, image = trained("dka", factory=lambda: Swin(3), shape=(1, 1, 32, 32, 32))
    path = save_adapter(model, tmp_path / "adapter.pt")
    restored = load_adapter(fresh(lambda: Swin(3)), path).eval()
    with torch.no_grad():
        assert torch.equal(restored(image), model(image))


def test_refuses_another_method(tmp_path):
    model, _ = trained("dka")
    path = save_adapter(model, tmp_path / "dka.pt")
    other = fresh()
    apply_peft(other, "lora")
    with pytest.raises(PipelineError, match=r"dka\.pt was made for method 'dka', but this model has 'lora'"):
        load_adapter(other, path)


def test_refuses_other_options(tmp_path):
    model, _ = trained("dka", r=8)
    path = save_adapter(model, tmp_path / "dka.pt")
    other = fresh()
    apply_peft(other, "dka")
    with pytest.raises(PipelineError, match="was made for options"):
        load_adapter(other, path)


@pytest.mark.parametrize("old_name", ["default", "paper"])
def test_loads_a_checkpoint_that_spells_the_paper_init_by_an_old_name(tmp_path, old_name):
    """PyTorch's init was ``"paper"``, then ``"default"`` until 2026-11-28, ``"paper"`` again since: checkpoints of
    every spelling load, onto either kind of model."""
    model, image = trained("dka", init="paper")
    payload = torch.load(save_adapter(model, tmp_path / "new.pt"), weights_only=True)
    assert payload["options"]["init"] == "paper"
    payload["options"]["init"] = old_name
    torch.save(payload, tmp_path / "old.pt")
    restored = load_adapter(fresh(), tmp_path / "old.pt").eval()
    assert restored.peft_state.options["init"] == "paper"
    with torch.no_grad():
        assert torch.equal(restored(image), model(image))
    applied = fresh()
    apply_peft(applied, "dka", init="paper")
    load_adapter(applied, tmp_path / "old.pt")
    payload["options"]["init"] = "zero"
    torch.save(payload, tmp_path / "zero.pt")
    with pytest.raises(PipelineError, match="was made for options"):
        load_adapter(applied, tmp_path / "zero.pt")


def test_refuses_another_backbone(tmp_path):
    model, _ = trained("dka")
    path = save_adapter(model, tmp_path / "dka.pt")
    with pytest.raises(PipelineError, match="was made for backbone 'toy_sam_vit', not 'toy_swin_2d'"):
        load_adapter(fresh(lambda: Swin(2)), path)


def test_refuses_truncated_and_foreign_files(tmp_path):
    model, _ = trained("dka")
    path = save_adapter(model, tmp_path / "dka.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PipelineError, match="truncated.pt cannot be read"):
        load_adapter(fresh(), truncated)
    foreign = tmp_path / "weights.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(PipelineError, match="weights.pt is not an adapter checkpoint"):
        load_adapter(fresh(), foreign)
    with pytest.raises(PipelineError, match="missing.pt does not exist"):
        load_adapter(fresh(), tmp_path / "missing.pt")


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    model, _ = trained("dka")
    path = save_adapter(model, tmp_path / "adapter.pt")
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(model, path)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.pt"], "no temporary file is left behind"
