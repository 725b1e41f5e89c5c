"""apply_peft on every layout x every method: what trains, how much, and that it changes only what it should."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft import METHODS, apply_peft, param_groups
from pipeline.peft.methods import build_method
from pipeline.peft.modules import AdaptedBlock, TokenBottleneck
from tests.peft.backbones import BACKBONES, TinyViTEncoder

BLOCK_METHODS = ("dka", "lka", "adapter", "adaptformer", "convpass", "telescopic")


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    factory, shape = BACKBONES[name]
    torch.manual_seed(0)
    model = factory()
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return model, image


def bias_count(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n == "bias" or n.endswith(".bias"))


def expected_adapter_count(method: str, model: nn.Module, options: dict) -> int:
    """Closed-form trainable counts per method, from the block specs (computed before injection)."""
    spec = model.peft_spec()
    from pipeline.peft.selection import select_blocks

    sites = [spec.blocks[i] for i in select_blocks(spec, options.get("layers", "middle"))]
    total = 0
    for position, site in enumerate(sites):
        c, d = site.channels, site.layout.spatial_dims
        if method == "dka":
            r, kl, ks = 16, 51, 5
            large = 3 * kl if d == 3 else kl**2
            total += 2 * c * r + r * (large + ks**d) + (5 * r if d == 3 else 3 * r) + c
        elif method == "lka":
            r, k = 16, 51
            total += 2 * c * r + r * (3 * k if d == 3 else k**2) + (4 * r if d == 3 else 2 * r) + c
        elif method in ("adapter", "adaptformer"):
            total += 2 * c * 16 + 16 + c
        elif method == "convpass":
            r = 8
            total += 2 * c * r + r * r * 3**d + 2 * r + c
        elif method == "telescopic":
            w = round(8 + 24 * position / (len(sites) - 1)) if len(sites) > 1 else 8
            total += 2 * c * w + w + c + 2 * c + 1
        elif method == "lora":
            block = model.get_submodule(site.path)
            for target in site.attention:
                linear = block.get_submodule(target)
                total += 8 * (linear.in_features + linear.out_features)
        elif method == "bitfit":
            total += bias_count(model.get_submodule(site.path))
    if method == "full":
        head = sum(p.numel() for path in spec.head for p in model.get_submodule(path).parameters())
        total = sum(p.numel() for p in model.parameters()) - head
    return total


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_trainable_parameters_match_the_closed_form(backbone, method):
    model, _ = build(backbone)
    expected = expected_adapter_count(method, model, {})
    head = sum(p.numel() for path in model.peft_spec().head for p in model.get_submodule(path).parameters())
    report = apply_peft(model, method)
    assert report.groups["adapter"] == (expected, expected)
    assert report.groups["head"] == (head, head)
    assert report.groups["backbone"][0] == 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(model.peft_state.adapter) | set(model.peft_state.head)
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def outputs_before_and_after(backbone: str, method: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    model, image = build(backbone)
    model.eval()
    with torch.no_grad():
        before = model(image)
    apply_peft(model, method, **options)
    model.eval()
    with torch.no_grad():
        return before, model(image)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("method", BLOCK_METHODS)
def test_zero_init_leaves_the_output_unchanged_and_default_init_changes_it(backbone, method):
    """Only block adapters add a branch that ``init`` sets; the paper init must be visible, or zero proves nothing."""
    before, after = outputs_before_and_after(backbone, method, init="zero")
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    before, after = outputs_before_and_after(backbone, method, init="paper")
    assert (after - before).abs().max() > 1e-4, "with init='paper' the adapter branch must change the output"


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_step_changes_trainable_tensors_only(backbone, method):
    model, image = build(backbone)
    apply_peft(model, method)
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(param_groups(model, lr=0.5), lr=0.5)
    model.train()
    model(image).square().mean().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable
    assert changed, "the step changed nothing"
    # everything trainable that received a gradient moved
    moved = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved <= changed


@pytest.mark.parametrize("method", ["dka", "lka"])
def test_large_kernel_adapters_start_at_zero_and_keep_the_paper_init_by_name(method):
    """The default is the paper's layer (kernels, placement, dropout) from zero; ``init: paper`` is PyTorch's."""
    model, _ = build("sam_vit")
    report = apply_peft(model, method)
    assert report.state.layers == [2, 3]
    block = model.get_submodule("encoder.blocks.2")
    adapter = block.adapter
    assert block.placement == "parallel"
    assert [tuple(conv.weight.shape[2:]) for conv in adapter.convs] == [(51, 51), (5, 5)][:len(adapter.convs)]
    assert len(adapter.convs) == {"dka": 2, "lka": 1}[method]
    assert adapter.up.weight.abs().sum() == 0 and report.state.options["init"] == "zero"
    assert adapter.drop.p == 0.1
    paper, _ = build("sam_vit")
    assert apply_peft(paper, method, init="default").state.options["init"] == "paper", "the name until 2026-11-28"
    assert paper.get_submodule("encoder.blocks.2").adapter.up.weight.abs().sum() > 0


def test_parallel_placement_adapts_the_block_input():
    model, _ = build("sam_vit")
    apply_peft(model, "dka", layers=[0], init="paper")
    block = model.get_submodule("encoder.blocks.0").eval()
    x = torch.randn(2, 8, 8, 32)
    out = block.base(x)
    torch.testing.assert_close(block(x), out + block.adapter(x))
    assert not torch.allclose(block(x), out + block.adapter(out)), "the two placements must differ on this input"


def test_adapted_block_reads_through_to_the_wrapped_block():
    base = nn.Linear(4, 4)
    base.input_resolution = (2, 2)
    block = AdaptedBlock(base, nn.Identity(), "parallel")
    assert block.input_resolution == (2, 2) and block.in_features == 4
    with pytest.raises(AttributeError):
        block.no_such_attribute  # noqa: B018


def test_token_bottleneck_defaults_and_scales():
    torch.manual_seed(0)
    tokens = torch.randn(2, 5, 8)
    plain = TokenBottleneck(8, 4).train()
    torch.testing.assert_close(plain(tokens), plain.up(plain.act(plain.down(tokens))), msg="no dropout, no norm, x1")
    assert [n for n, _ in plain.named_parameters() if "scale" in n] == [] and "scale" not in plain.state_dict()
    scaled = TokenBottleneck(8, 4, scale=0.1, learnable_scale=True).eval()
    assert isinstance(scaled.scale, nn.Parameter) and scaled.scale.item() == pytest.approx(0.1)
    torch.testing.assert_close(scaled(tokens), 0.1 * scaled.up(scaled.act(scaled.down(tokens))))


def test_sequential_placement_adapts_the_block_output():
    model, image = build("sam_vit")
    apply_peft(model, "dka", placement="sequential", layers=[0])
    block = model.get_submodule("encoder.blocks.0").eval()
    x = torch.randn(2, 8, 8, 32)
    out = block.base(x)
    torch.testing.assert_close(block(x), out + block.adapter(out))


def test_cls_token_bypasses_the_convolutions():
    model, _ = build("vit_cls")
    apply_peft(model, "lka", layers=[0], init="paper")
    adapter = model.get_submodule("vit.blocks.0").adapter
    adapter.eval()
    tokens = torch.randn(1, 17, 32)
    hidden = adapter.act(adapter.down(tokens))
    expected_cls = adapter.up(adapter.act(hidden[:, :1]))
    torch.testing.assert_close(adapter(tokens)[:, :1], expected_cls)


def test_telescopic_width_grows_with_depth():
    model, _ = build("sam_vit")
    apply_peft(model, "telescopic", layers="all")
    widths = [model.get_submodule(f"encoder.blocks.{i}").adapter.down.out_features for i in range(6)]
    assert widths == sorted(widths) and widths[0] == 8 and widths[-1] == 32
    scale = model.get_submodule("encoder.blocks.0").adapter.scale
    assert isinstance(scale, nn.Parameter) and scale.item() == pytest.approx(0.1)


def test_hierarchical_middle_means_middle_stages():
    model, _ = build("swin_3d")
    report = apply_peft(model, "dka")
    paths = [model.peft_spec().blocks[i].path for i in report.state.layers]
    assert paths == [f"swin.layers{s}.0.blocks.{i}" for s in (2, 3) for i in (0, 1)]


def test_param_groups_carry_asynchronous_learning_rates():
    model, _ = build("sam_vit")
    apply_peft(model, "dka")
    groups = param_groups(model, lr=1e-4, adapter_lr=1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("adapter", 1e-3), ("head", 1e-4)]
    counted = sum(p.numel() for g in groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_linear_probe_has_only_a_head_group():
    model, _ = build("sam_vit")
    apply_peft(model, "linear_probe")
    assert [g["name"] for g in param_groups(model, lr=1e-3)] == ["head"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: apply_peft(m, "dora"), "unknown PEFT method 'dora'"),
        (lambda m: apply_peft(m, "dka", layers=[6]), "out of range"),
        (lambda m: apply_peft(m, "dka", layers="center"), "layers must be one of"),
        (lambda m: apply_peft(m, "dka", kernel_large=50), "kernel_large must be odd"),
        (lambda m: apply_peft(m, "dka", r=0), "r must be a positive integer"),
        (lambda m: apply_peft(m, "lora", r=-4), "r must be a positive integer"),
        (lambda m: apply_peft(m, "dka", rank=4), "dka has no option rank"),
        (lambda m: apply_peft(m, "dka", placement="inside"), "placement must be one of"),
        (lambda m: apply_peft(m, "bitfit", placement="parallel"), "placement only applies"),
        (lambda m: apply_peft(m, "telescopic", r_min=16, r_max=8), "r_max (8) must be at least r_min (16)"),
    ],
)
def test_bad_arguments_raise_one_clear_error(call, message):
    model, _ = build("sam_vit")
    with pytest.raises(PipelineError) as error:
        call(model)
    assert message in str(error.value)
    assert not any(type(m).__name__ == "AdaptedBlock" for m in model.modules()), "a failed call changed the model"


@pytest.mark.parametrize(
    "options, message",
    [({"r": 0}, "r must be a positive integer, got 0"), ({"r": True}, "r must be a positive integer, got True"),
     ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
     ({"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
     ({"dropout": "0.1"}, "dropout must be in [0, 1), got '0.1'")],
)
def test_option_bounds_are_exact(options, message):
    """The smallest valid values pass, the first invalid ones do not (no model needed: options check themselves)."""
    assert build_method("dka", r=1, dropout=0.0).r == 1
    with pytest.raises(PipelineError, match=re.escape(message)):
        build_method("dka", **options)


def test_applying_twice_is_refused():
    model, _ = build("sam_vit")
    apply_peft(model, "dka")
    with pytest.raises(PipelineError, match="already has dka"):
        apply_peft(model, "lora")


def test_model_without_spec_is_refused():
    with pytest.raises(PipelineError, match="peft_spec"):
        apply_peft(nn.Linear(2, 2), "dka")


@pytest.mark.slow
def test_litemedsam_encoder_real_weights():
    """TinyViT with LiteMedSAM's shipped weights: middle = the 6-block stage; zero-init DKA keeps its output."""
    torch.manual_seed(0)
    model = TinyViTEncoder().eval()
    image = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        before = model(image)
    report = apply_peft(model, "dka", init="zero")
    assert [model.peft_spec().blocks[i].path for i in report.state.layers] == [
        f"encoder.layers.2.blocks.{i}" for i in range(6)
    ]
    c, r = 160, 16
    assert report.groups["adapter"][0] == 6 * (2 * c * r + r * (51**2 + 5**2) + 3 * r + c)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(image), before, rtol=0, atol=1e-6)
    assert not any(type(m) is nn.BatchNorm2d for m in model.encoder.modules()), "frozen BatchNorm must not update"
    assert math.isfinite(model(image).sum().item())
