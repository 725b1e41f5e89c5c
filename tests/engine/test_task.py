"""The class count a bundle is given and what follows from it: output channels, extra inputs, the up-front check."""

from __future__ import annotations

import pytest

from pipeline.engine.arguments import check_settings
from pipeline.engine.task import out_channels, prompt_inputs
from pipeline.errors import PipelineError


def test_prompt_free_networks_have_one_channel_per_class_and_box_prompted_ones_one_channel():
    assert [out_channels(n) for n in (2, 3, 4)] == [2, 3, 4]
    assert out_channels(4, prompt="none") == 4
    assert out_channels(2, prompt="box") == 1


def test_text_prompts_give_one_sigmoid_map_for_one_prompt_and_a_softmax_map_per_class_for_more():
    assert [out_channels(n, prompt="text") for n in (2, 3, 5)] == [1, 3, 5]


def test_a_box_prompt_with_more_than_two_classes_is_refused_before_anything_is_built():
    with pytest.raises(PipelineError, match=r"num_classes must be 2 .* got 3 \(--num_classes\)"):
        out_channels(3, prompt="box")
    with pytest.raises(PipelineError, match="num_classes must be 2"):
        check_settings(prompt="box", num_classes=3)
    with pytest.raises(PipelineError, match=r"num_classes must be a whole number >= 2 \(--num_classes\), got 1"):
        check_settings(num_classes=1)
    check_settings(prompt="none", num_classes=3)


def test_only_box_prompted_networks_take_the_batch_s_boxes():
    assert prompt_inputs("box") == {"boxes": "box"}
    assert prompt_inputs("none") == {}


def test_a_box_prompted_network_with_per_class_boxes_has_one_channel_for_any_number_of_classes():
    assert [out_channels(n, prompt="box", class_boxes=True) for n in (2, 3, 5)] == [1, 1, 1]
    check_settings(prompt="box", num_classes=3, class_boxes=True)
    assert out_channels(3, prompt="none", class_boxes=True) == 3, "prompt-free ignores boxes"
