"""SAM ViT-B/L/H and MedSAM ViT-B wrappers, built small with random weights (no SAM weights exist offline)."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import BACKBONES, build_backbone
from pipeline.models.sam import SAM_VARIANTS
from tests.models.model_cases import SMALL_SAM

BOXES = torch.tensor([[5.0, 4.0, 40.0, 30.0], [0.0, 0.0, 69.0, 49.0]])


@pytest.mark.parametrize("variant", sorted(SAM_VARIANTS))
def test_box_prompted_logits_at_input_resolution(variant, check_sites):
    model = build_backbone(variant, size=SMALL_SAM)
    image = torch.rand(2, 1, 50, 70) * 1000  # synthetic, arbitrary intensity range
    with torch.no_grad():
        logits = model(image, BOXES)
    assert logits.shape == (2, 1, 50, 70) and torch.isfinite(logits).all()
    assert check_sites(model, image, BOXES) == SMALL_SAM.depth
    spec = model.peft_spec()
    assert "mask_decoder.iou_prediction_head" not in spec.head and "mask_decoder.transformer" in spec.head
    assert all(site.attention == ("attn.qkv", "attn.proj") for site in spec.blocks)
    assert not any(p.requires_grad for p in model.prompt_encoder.parameters())


def test_prompt_free_head_starts_from_the_single_mask_token_at_the_class_priors(tmp_path):
    pretrained = build_backbone("sam_vit_b", size=SMALL_SAM)
    torch.save(pretrained.state_dict(), tmp_path / "sam_small.pth")
    free = build_backbone(
        "sam_vit_b", size=SMALL_SAM, prompt="none", num_classes=6, checkpoint=tmp_path / "sam_small.pth"
    )
    decoder, source = free.mask_decoder, pretrained.mask_decoder
    assert decoder.num_mask_tokens == 6 and len(decoder.output_hypernetworks_mlps) == 6
    for k in range(6):  # every class starts as the checkpoint's single-mask token 0 and its MLP
        assert torch.equal(decoder.mask_tokens.weight[k], source.mask_tokens.weight[0])
        mlp, source_mlp = decoder.output_hypernetworks_mlps[k], source.output_hypernetworks_mlps[0]
        assert torch.equal(mlp.layers[0].weight, source_mlp.layers[0].weight)
    assert decoder.output_hypernetworks_mlps[0] is not decoder.output_hypernetworks_mlps[4], "classes train apart"
    assert "class_prior" in free.peft_spec().head
    image = torch.rand(2, 3, 61, 45)
    with torch.no_grad():
        logits = free(image)
    assert logits.shape == (2, 6, 61, 45)
    # identical classes: the start is the priors, background 0.9 and 0.02 per foreground class, at every pixel
    probabilities = logits.softmax(1)
    expected = torch.tensor([0.9] + [0.02] * 5).view(1, 6, 1, 1).expand_as(probabilities)
    assert torch.allclose(probabilities, expected, atol=1e-5)


def test_batch_matches_single_images():
    model = build_backbone("sam_vit_b", size=SMALL_SAM)
    image = torch.rand(2, 3, 50, 70)
    with torch.no_grad():
        batch = model(image, BOXES)
        single = torch.cat([model(image[i : i + 1], BOXES[i : i + 1]) for i in range(2)])
    assert torch.allclose(batch, single, atol=1e-5)


def test_longest_side_geometry_and_box_mapping():
    model = build_backbone("sam_vit_b", size=SMALL_SAM)
    image = torch.zeros(1, 1, 50, 100)
    image[..., :, 50:] = 1.0  # synthetic: right half bright
    prepared, geometry = model.prepare(image)
    assert prepared.shape == (1, 3, 64, 64) and geometry.resized == (32, 64)
    assert torch.all(prepared[..., 32:, :] == 0), "padding goes bottom/right"
    assert geometry.scale_xy == (0.64, 0.64)
    medsam = build_backbone("medsam_vit_b", size=SMALL_SAM)
    prepared, geometry = medsam.prepare(image)
    assert geometry.resized == (64, 64) and geometry.scale_xy == (0.64, 1.28)
    assert prepared.min() >= 0 and prepared.max() <= 1, "MedSAM takes [0, 1] min-max scaled input"


def test_prompt_errors():
    with pytest.raises(PipelineError, match="prompt='box' segments one object"):
        build_backbone("sam_vit_b", size=SMALL_SAM, num_classes=3)
    with pytest.raises(PipelineError, match="prompt must be one of"):
        build_backbone("sam_vit_b", size=SMALL_SAM, prompt="points")
    with pytest.raises(PipelineError, match="2D model"):
        build_backbone("sam_vit_h", size=SMALL_SAM, spatial_dims=3)
    model = build_backbone("sam_vit_b", size=SMALL_SAM)
    with pytest.raises(PipelineError, match=r"give boxes of shape \(2, 4\)"):
        model(torch.rand(2, 3, 32, 32))
    with pytest.raises(PipelineError, match="unknown backbone 'sam'"):
        build_backbone("sam")
    assert set(BACKBONES) == {"litemedsam", "sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b", "swin_unetr",
                              "clipseg"}


def test_metatensor_batch_keeps_its_transform_trace_through_the_cached_network():
    """Invertd maps predictions back to the input's grid with the input's trace, so it must survive the network
    (including the feature cache's per-sample indexing)."""
    from monai.data import MetaTensor, decollate_batch, list_data_collate
    from monai.transforms import Resize

    from pipeline.models import FeatureCache

    model = build_backbone("sam_vit_b", size=SMALL_SAM).eval()
    model.feature_cache = FeatureCache()
    batch = list_data_collate([{"image": Resize((50, 70))(MetaTensor(torch.rand(3, 40, 60)))} for _ in range(2)])
    with torch.no_grad():
        logits = model(batch["image"], BOXES)
    assert isinstance(logits, MetaTensor)
    assert [item.applied_operations[0]["class"] for item in decollate_batch(logits)] == ["Resize", "Resize"]
