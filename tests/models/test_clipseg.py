"""CLIPSeg as a backbone: shapes, prompts, preprocessing and snapshot errors, on a tiny random-weight config.

The real ``CIDAS/clipseg-rd64-refined`` weights are not available offline; its architecture is checked by
``rd64_refined_config`` (built on the meta device, nothing downloaded).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation

from pipeline.errors import PipelineError
from pipeline.models import build_backbone
from pipeline.models.clipseg import CharacterTokenizer, rd64_refined_config
from tests.models.model_cases import TINY_CLIPSEG, tiny_clipseg


def test_binary_model_gives_one_logit_channel_at_the_input_size():
    model = tiny_clipseg()
    logits = model(torch.rand(2, 3, 50, 70) * 255)
    assert logits.shape == (2, 1, 50, 70)
    assert model(torch.rand(1, 1, 40, 40)).shape == (1, 1, 40, 40), "grey images are expanded to RGB"


def test_multi_class_channels_are_background_then_each_prompt_for_each_image():
    """Channel k+1 of the two-prompt model is what the one-prompt model gives for prompt k (same random weights),
    for each image of the batch: the image/prompt pairing of the batched decoder call is right."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 48, 48) * 255
    torch.manual_seed(1)
    both = tiny_clipseg(prompts=("polyp", "instrument"), num_classes=3)
    torch.manual_seed(1)
    instrument = tiny_clipseg(prompts=("instrument",))
    logits = both(images)
    assert logits.shape == (2, 3, 48, 48)
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0])), "background logit is 0"
    # batched and single-prompt calls round differently (seen: 2e-5 on one of 4608 values); a wrong pairing is O(1)
    torch.testing.assert_close(logits[:, 2:], instrument(images), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits[0, 1], logits[1, 1]), "the two images give different maps"


def test_intensity_range_does_not_matter():
    model = tiny_clipseg()
    image = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(model(image), model(image * 255 + 10), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompts": [], "num_classes": 1}, "one non-empty text prompt per class"),
        ({"prompts": ["polyp", "tool"], "num_classes": 2}, "2 prompt(s) give num_classes=3"),
        ({"prompts": ["polyp"], "num_classes": 2}, "1 prompt(s) give num_classes=1"),
    ],
)
def test_bad_prompts_are_one_line(options, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        tiny_clipseg(**options)
    assert "\n" not in str(error.value)


def test_checkpoint_xor_config():
    with pytest.raises(PipelineError, match="exactly one of checkpoint="):
        build_backbone("clipseg", prompts=["polyp"])


def test_character_tokenizer_needs_eos_as_the_largest_id():
    config = CLIPSegConfig(**TINY_CLIPSEG).text_config
    tokens = CharacterTokenizer(config)(["ab", "abcd"])
    assert tokens["input_ids"][1].tolist()[0] == 62 and tokens["input_ids"][1].tolist()[-1] == 63
    assert tokens["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    config.eos_token_id = 5
    with pytest.raises(PipelineError, match="eos_token_id = vocab_size - 1"):
        CharacterTokenizer(config)


def test_bad_snapshot_folders_are_one_line_naming_the_folder_and_what_is_missing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(PipelineError) as error:
        build_backbone("clipseg", checkpoint=missing, prompts=["polyp"])
    assert str(missing) in str(error.value) and "not a directory" in str(error.value)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps({"model_type": "clipseg"}))
    with pytest.raises(PipelineError) as error:
        build_backbone("clipseg", checkpoint=partial, prompts=["polyp"])
    message = str(error.value)
    assert "\n" not in message and str(partial) in message
    assert "missing weights (model.safetensors or pytorch_model.bin), tokenizer" in message

    # weights and config written by transformers itself, but no tokenizer: still refused, naming it
    saved = tmp_path / "saved"
    CLIPSegForImageSegmentation(CLIPSegConfig(**TINY_CLIPSEG)).save_pretrained(saved)
    with pytest.raises(PipelineError, match=r"missing tokenizer \(tokenizer.json"):
        build_backbone("clipseg", checkpoint=saved, prompts=["polyp"])


def test_rd64_refined_config_is_the_papers_vit_b16():
    with torch.device("meta"):
        model = CLIPSegForImageSegmentation(rd64_refined_config())
    config = model.config
    assert (config.vision_config.patch_size, config.vision_config.hidden_size) == (16, 768)
    assert (config.vision_config.num_hidden_layers, config.text_config.num_hidden_layers) == (12, 12)
    assert tuple(config.extract_layers) == (3, 6, 9) and config.reduce_dim == 64
    decoder = sum(p.numel() for p in model.decoder.parameters())
    assert decoder == 1_127_009, "CLIPSeg rd64-refined's decoder"
