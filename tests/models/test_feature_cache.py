"""The frozen-prefix cache: where the prefix ends, exactness against the uncached path, keys, disk entries."""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.engine.task import segmentation_loss
from pipeline.errors import PipelineError
from pipeline.models import FeatureCache, build_backbone
from pipeline.models.feature_cache import frozen_prefix, run_steps
from pipeline.peft import apply_peft, param_groups
from tests.models.model_cases import SMALL_SAM, kvasir_case, kvasir_names

BOXES = torch.tensor([[5.0, 4.0, 40.0, 30.0], [0.0, 0.0, 69.0, 49.0]])


def small_sam(method: str = "dka", **options) -> torch.nn.Module:
    model = build_backbone("sam_vit_b", size=SMALL_SAM)
    apply_peft(model, method, **options)
    return model


def test_steps_compose_to_the_encoder_exactly(litemedsam):
    for model in (litemedsam, build_backbone("sam_vit_b", size=SMALL_SAM)):
        size = model.preprocessing.image_size
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            assert torch.equal(run_steps(model, model.encoder_steps, x), model.image_encoder(x))


def test_prefix_ends_at_the_first_trainable_step(litemedsam):
    steps = litemedsam.encoder_steps
    paths = [step.owns[0] for step in steps]
    dka = copy.deepcopy(litemedsam)
    apply_peft(dka, "dka", layers="middle")
    # middle = TinyViT stage 2: patch embedding, stage 0, stage 1's two blocks and its patch merging are frozen
    assert paths[frozen_prefix(dka, steps)] == "image_encoder.layers.2.blocks.0"
    probe = copy.deepcopy(litemedsam)
    apply_peft(probe, "linear_probe")
    assert frozen_prefix(probe, steps) == len(steps), "linear probing: the whole encoder is the prefix"
    full = copy.deepcopy(litemedsam)
    apply_peft(full, "full")
    assert frozen_prefix(full, steps) == 0


def test_stochastic_prefix_is_not_cached_in_training():
    model = small_sam("dka", layers="top")
    model.image_encoder.blocks[0].mlp.add_module("noise", torch.nn.Dropout(0.5))
    model.train()
    assert frozen_prefix(model, model.encoder_steps) == 1, "stops at block 0, after the patch embedding"
    model.eval()
    assert frozen_prefix(model, model.encoder_steps) == 4, "in evaluation up to block 3, the adapted one"


def test_cached_forward_equals_uncached_and_computes_each_input_once():
    model = small_sam("dka", layers="top").eval()
    image = torch.rand(2, 3, 50, 70)
    with torch.no_grad():
        plain = model(image, BOXES)
        model.feature_cache = cache = FeatureCache()
        first, second = model(image, BOXES), model(image, BOXES)
    assert torch.equal(first, plain) and torch.equal(second, plain)
    assert cache.stats == {"computed": 2, "memory": 2}
    with torch.no_grad():
        model(image.flip(-1), BOXES)  # another view is another input
    assert cache.stats["computed"] == 4


def test_editing_a_frozen_tensor_invalidates_the_key():
    model = small_sam("dka", layers="top").eval()
    model.feature_cache = cache = FeatureCache()
    image = torch.rand(1, 3, 64, 64)
    box = BOXES[:1]
    with torch.no_grad():
        before = model(image, box)
        model.image_encoder.patch_embed.proj.weight.mul_(0.5)
        after = model(image, box)
        model.feature_cache = None
        reference = model(image, box)
    assert cache.stats["computed"] == 2 and torch.equal(after, reference) and not torch.equal(before, after)


def test_in_training_false_serves_evaluation_only():
    model = small_sam("dka", layers="top")
    model.feature_cache = cache = FeatureCache(in_training=False)
    image = torch.rand(2, 3, 64, 64)
    model.train()
    model(image, BOXES).sum().backward()
    assert sum(cache.stats.values()) == 0
    with torch.no_grad():
        model.eval()(image, BOXES)
    assert cache.stats["computed"] == 2


def test_disk_entries_are_shared_and_corrupt_ones_recomputed(tmp_path, caplog):
    model = small_sam("linear_probe").eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        model.feature_cache = FeatureCache(directory=tmp_path)
        expected = model(image, BOXES)
        model.feature_cache = reader = FeatureCache(directory=tmp_path)  # a later run of a sweep
        assert torch.equal(model(image, BOXES), expected) and reader.stats == {"disk": 2}
        entries = sorted(tmp_path.rglob("*.safetensors"))
        assert len(entries) == 2
        data = bytearray(entries[0].read_bytes())
        data[-1] ^= 0xFF  # one flipped bit in the stored tensor
        entries[0].write_bytes(bytes(data))
        entries[1].write_bytes(entries[1].read_bytes()[:50])  # truncated
        model.feature_cache = healer = FeatureCache(directory=tmp_path)
        assert torch.equal(model(image, BOXES), expected)
    assert healer.stats == {"computed": 2} and "corrupt" in caplog.text
    assert not list(tmp_path.rglob("*.tmp"))


def test_entries_written_on_other_threads_are_computed_again(tmp_path, monkeypatch):
    """Features from another thread count round differently: reusing them would make a rerun another run."""
    model = small_sam("linear_probe").eval()
    image = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
        model.feature_cache = FeatureCache(directory=tmp_path)
        model(image, BOXES)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
        model.feature_cache = other = FeatureCache(directory=tmp_path)
        model(image, BOXES)
        model.feature_cache = same = FeatureCache(directory=tmp_path)
        model(image, BOXES)
    assert other.stats == {"computed": 2} and same.stats == {"disk": 2}
    assert len(list(tmp_path.rglob("*.safetensors"))) == 4


def test_memory_cap_evicts_least_recently_used():
    cache = FeatureCache(memory_gb=3 * 400 / 2**30)  # room for three 100-float entries
    for key in "abcd":
        cache.store(key, torch.zeros(100))
    assert cache.lookup("a") is None and cache.lookup("d") is not None


@pytest.mark.slow
@pytest.mark.real_data
def test_training_with_the_cache_gives_the_same_losses_on_real_kvasir(shared_data, litemedsam):
    """Four optimizer steps of LiteMedSAM + DKA (prompt-free) on real Kvasir-SEG images, with and without the cache:
    the same losses (1e-6) and the same evaluation logits, while the cached run computes each image's prefix once."""
    names = kvasir_names(shared_data, 2)
    cases = [kvasir_case(shared_data, name) for name in names]
    images = torch.cat([torch.nn.functional.interpolate(image, size=(96, 128), mode="area") for image, _ in cases])
    labels = torch.cat([torch.nn.functional.interpolate(mask.float(), size=(96, 128)) for _, mask in cases]).long()
    base = build_backbone("litemedsam", prompt="none", num_classes=2)
    losses, outputs, caches = [], [], []
    for cached in (False, True):
        torch.manual_seed(0)
        model = copy.deepcopy(base)
        apply_peft(model, "dka", layers="middle")
        model.feature_cache = FeatureCache(enabled=cached)
        optimizer = torch.optim.AdamW(param_groups(model, lr=1e-4, adapter_lr=1e-3, head_lr=1e-4))
        loss_function, run_losses = segmentation_loss(2), []
        for step in range(4):
            model.train()  # every step, as MONAI's SupervisedTrainer does
            order = [step % 2, 1 - step % 2]  # the batch order changes between steps, as a shuffled loader's does
            loss = loss_function(model(images[order]), labels[order])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run_losses.append(loss.item())
        with torch.no_grad():
            outputs.append(model.eval()(images))
        losses.append(run_losses)
        caches.append(model.feature_cache.stats)
    assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-6)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    # each image's prefix is computed once and reused in the 3 later steps and in evaluation mode (TinyViT's
    # derived attention-bias buffer, re-registered at every train()/eval() switch, is not part of the key)
    assert caches[0] == {} and caches[1] == {"computed": 2, "memory": 3 * 2 + 2}


def test_options_given_as_words_are_read_as_words():
    assert FeatureCache(enabled="false").enabled is False and FeatureCache(enabled="True").enabled is True
    with pytest.raises(PipelineError, match=r"cache must be true or false \(--cache\), got 'maybe'"):
        FeatureCache(enabled="maybe")
    with pytest.raises(PipelineError, match="cache_memory_gb must be a number >= 0"):
        FeatureCache(memory_gb=-1)
