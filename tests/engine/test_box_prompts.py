"""Box prompts from real-looking labels (noise pixels, several objects) and the inferers that use them; synthetic."""

from __future__ import annotations

import pytest
import torch

from pipeline.engine.inferers import ObjectBoxInferer
from pipeline.engine.prompts import PromptBoxd
from pipeline.engine.verification import WholeImageBox
from pipeline.errors import PipelineError


def synthetic_label() -> torch.Tensor:
    label = torch.zeros(1, 40, 60)
    label[0, 0, 0] = 1  # a JPEG-noise pixel
    label[0, 10:20, 30:50] = 1  # object 1: rows 10-19, columns 30-49
    label[0, 25:35, 5:15] = 1  # object 2
    return label


def test_noise_pixels_are_dropped_and_each_object_gets_its_own_box():
    label = synthetic_label()
    union = PromptBoxd(min_pixels=4)({"label": label})["box"]
    assert union.tolist() == [5.0, 10.0, 49.0, 34.0]
    noisy = PromptBoxd()({"label": label})["box"]
    assert noisy.tolist()[:2] == [0.0, 0.0], "without min_pixels the stray pixel stretches the box"
    boxes = PromptBoxd(min_pixels=4, per_object=True)({"label": label})["box"]
    assert sorted(boxes.tolist()) == [[5.0, 25.0, 14.0, 34.0], [30.0, 10.0, 49.0, 19.0]]


def test_object_box_inferer_unites_per_box_logits_and_whole_image_box_fills_in():
    def network(image, boxes):
        """The SAM-family contract: one logit channel per box, (B, K, H, W) for (B, K, 4) boxes."""
        per_image = boxes if boxes.dim() == 3 else boxes[:, None]
        logits = torch.full((image.shape[0], per_image.shape[1], *image.shape[-2:]), -1.0)
        for index, row in enumerate(per_image.long().tolist()):
            for k, (x0, y0, x1, y1) in enumerate(row):
                logits[index, k, y0 : y1 + 1, x0 : x1 + 1] = 1.0
        return logits

    image = torch.zeros(1, 3, 40, 60)
    boxes = PromptBoxd(min_pixels=4, per_object=True)({"label": synthetic_label()})["box"][None]
    prediction = ObjectBoxInferer()(image, network, boxes=boxes) > 0
    assert prediction.shape == (1, 1, 40, 60) and int(prediction.sum()) == 10 * 20 + 10 * 10
    single = ObjectBoxInferer()(image, network, boxes=boxes[:, 0])
    assert int((single > 0).sum()) == 200, "components are boxed in raster order: object 1 first"

    class Boxed(torch.nn.Module):
        prompt = "box"

        def forward(self, image, boxes):
            return network(image, boxes)

    assert bool((WholeImageBox(Boxed())(image) > 0).all()), "no boxes: the whole image is the box"


def test_jittered_box_is_reproducible_for_a_seed_and_tight_without_jitter():
    label = torch.zeros(1, 20, 30)
    label[0, 3:8, 5:12] = 1
    first = PromptBoxd(jitter=4).set_random_state(7)({"label": label})
    second = PromptBoxd(jitter=4).set_random_state(7)({"label": label})
    assert torch.equal(first["box"], second["box"]) and first["box"].shape == (4,)
    assert PromptBoxd()({"label": label})["box"].tolist() == [5.0, 3.0, 11.0, 7.0]


def test_an_empty_label_names_its_file_instead_of_giving_a_box():
    from monai.data import MetaTensor


    label = MetaTensor(torch.zeros(1, 20, 30), meta={"filename_or_obj": "masks/frame_without_polyp.png"})
    with pytest.raises(PipelineError, match=r"masks/frame_without_polyp.png: the label is empty, so no box prompt"):
        PromptBoxd()({"label": label})
    assert "box" not in PromptBoxd(prompt="none")({"label": label}), "prompt-free runs take empty labels"


def test_without_a_label_the_whole_image_is_the_box_and_prompt_free_items_pass_through():
    image = torch.zeros(3, 40, 60)
    assert PromptBoxd()({"image": image})["box"].tolist() == [0.0, 0.0, 59.0, 39.0]
    assert PromptBoxd(per_object=True)({"image": image})["box"].tolist() == [[0.0, 0.0, 59.0, 39.0]]
    item = {"image": image, "label": synthetic_label()}
    out = PromptBoxd(prompt="none")(item)
    assert out.keys() == item.keys() and out["label"] is item["label"], "prompt-free models get no box key"

