"""Adapters in CLIPSeg: the Telescopic-adapter paper's recipe (arXiv 2512.13855) and the other methods on the vision
side, on a tiny random-weight CLIPSeg with the real model's depths (``tests.models.model_cases.TINY_CLIPSEG``)."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.peft import apply_peft, load_adapter, save_adapter
from pipeline.peft.methods.telescopic import telescopic_width
from pipeline.peft.modules import AdaptedBlock, AdaptedBranch
from tests.models.model_cases import TINY_CLIPSEG, tiny_clipseg

VISION = "clip.vision_model.encoder.layers"
TEXT = "clip.text_model.encoder.layers"


def _adapters(model) -> dict[str, torch.nn.Module]:
    return {name: module.adapter for name, module in model.named_modules() if isinstance(module, AdaptedBlock)}


def test_telescopic_default_is_the_papers_layer_selection_and_widths():
    model = tiny_clipseg()
    apply_peft(model, "telescopic")
    adapters = _adapters(model)
    vision = [f"{VISION}.{i}.{branch}" for i in range(9) for branch in ("self_attn", "mlp")]
    text = [f"{TEXT}.{i}.{branch}" for i in (6, 7, 8) for branch in ("self_attn", "mlp")]
    assert set(adapters) == {*vision, *text, "clip.text_projection"}, "vision 1-9, text 7-9 (1-based), conditional"
    assert all(isinstance(model.get_submodule(path), AdaptedBranch) for path in [*vision, *text])
    widths = [adapters[f"{VISION}.{i}.mlp"].down.out_features for i in range(9)]
    assert widths == [8, 11, 14, 17, 20, 23, 26, 29, 32], "linear 8 -> 32 with depth"
    assert all(adapters[path].down.out_features == 16 for path in text)
    assert adapters["clip.text_projection"].down.out_features == 8
    assert not any(p.requires_grad for p in model.decoder.parameters()), "the paper keeps the decoder frozen"


def _adapter_params(channels: int, width: int) -> int:
    """LayerNorm(C) + Linear(C→r) + Linear(r→C) + α."""
    return 2 * channels + (channels * width + width) + (width * channels + channels) + 1


def test_telescopic_trainable_count_equals_the_closed_form():
    vision, text = TINY_CLIPSEG["vision_config"]["hidden_size"], TINY_CLIPSEG["text_config"]["hidden_size"]
    projection = TINY_CLIPSEG["projection_dim"]
    expected = (
        2 * sum(_adapter_params(vision, telescopic_width(8, 32, i, 9)) for i in range(9))  # attention + MLP
        + 2 * 3 * _adapter_params(text, 16)
        + _adapter_params(projection, 8)
        + (1 * 4 * 9 + 2 * 4 + 4 * 1)  # refinement CNN: conv 3×3, BatchNorm, conv 1×1
    )
    report = apply_peft(tiny_clipseg(), "telescopic")
    assert report.trainable == expected
    decoder = tiny_clipseg(train_decoder=True)
    report_with_decoder = apply_peft(decoder, "telescopic")
    assert report_with_decoder.trainable == expected + sum(p.numel() for p in decoder.decoder.parameters())


def test_every_adapter_scale_starts_at_alpha_and_trains():
    model = tiny_clipseg()
    apply_peft(model, "telescopic")
    scales = [adapter.scale for adapter in _adapters(model).values()]
    assert len(scales) == 2 * 9 + 2 * 3 + 1
    assert all(isinstance(s, torch.nn.Parameter) and s.requires_grad and s.item() == pytest.approx(0.1)
               for s in scales)


def test_zero_init_leaves_the_output_unchanged_and_gradients_reach_both_encoders():
    model = tiny_clipseg(prompts=("polyp", "tool"), num_classes=3)
    image = torch.rand(2, 3, 64, 64)
    before = model(image)
    apply_peft(model, "telescopic", init="zero")
    after = model(image)
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    model.train()
    model(image).square().mean().backward()
    adapters = _adapters(model)
    for path in (f"{VISION}.0.self_attn", f"{TEXT}.8.mlp", "clip.text_projection"):
        grad = adapters[path].up.weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"{path} gets a gradient (no torch.no_grad around it)"


@pytest.mark.parametrize("method", ["dka", "lka", "convpass"])
def test_spatial_methods_refuse_text_blocks_in_one_line(method):
    model = tiny_clipseg()
    text_block = 10 + 6  # 10 vision sites, then the text layers
    with pytest.raises(PipelineError) as error:
        apply_peft(model, method, layers=[2, text_block])
    message = str(error.value)
    assert "\n" not in message and f"{TEXT}.6" in message and "1-D token sequences" in message
    assert not _adapters(model), "nothing was inserted"


@pytest.mark.parametrize("method", ["dka", "lka", "adapter", "lora"])
def test_vision_methods_adapt_the_middle_vision_layers_and_train(method):
    model = tiny_clipseg()
    report = apply_peft(model, method)
    assert report.state.layers == [3, 4, 5, 6], "middle third of the 10 vision layers the decoder reads"
    model.train()
    logits = model(torch.rand(2, 3, 64, 64))
    logits.mean().backward()
    adapter = [p for n, p in model.named_parameters() if n in set(report.state.adapter)]
    assert adapter and all(p.grad is not None for p in adapter)
    assert all(p.grad is None for n, p in model.named_parameters() if ".text_model." in n)


def test_named_layers_cover_the_vision_encoder_only():
    model = tiny_clipseg()
    assert apply_peft(model, "adapter", layers="all").state.layers == list(range(10))


def test_telescopic_checkpoint_round_trip(tmp_path):
    """The recipe's layers, branch placement and widths are rebuilt from the checkpoint on a fresh backbone (the
    same random backbone weights: the checkpoint holds only what trained)."""
    torch.manual_seed(3)
    model = tiny_clipseg()
    apply_peft(model, "telescopic")
    with torch.no_grad():
        for adapter in _adapters(model).values():
            adapter.scale.fill_(0.3)
    model.eval()
    image = torch.rand(1, 3, 64, 64)
    save_adapter(model, tmp_path / "telescopic.pt")
    torch.manual_seed(3)
    loaded = load_adapter(tiny_clipseg(), tmp_path / "telescopic.pt").eval()
    torch.testing.assert_close(loaded(image), model(image))


def test_explicit_arguments_win_over_the_recipe():
    model = tiny_clipseg()
    report = apply_peft(model, "telescopic", layers=[0, 1], placement="sequential", r_min=4, r_max=6)
    assert report.state.layers == [0, 1] and report.state.options["placement"] == "sequential"
    adapters = _adapters(model)
    assert set(adapters) == {f"{VISION}.0", f"{VISION}.1"}
    assert [adapters[f"{VISION}.{i}"].down.out_features for i in (0, 1)] == [4, 6]
