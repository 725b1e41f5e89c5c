"""``ObjectBoxInferer`` (one logit map per box, united) and ``WholeImageBox`` (no boxes: the whole image)."""

from __future__ import annotations

import torch

from pipeline.engine.inferers import ObjectBoxInferer
from pipeline.engine.verification import WholeImageBox


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
    boxes = torch.tensor([[[30.0, 10.0, 49.0, 19.0], [5.0, 25.0, 14.0, 34.0]]])  # two objects, 200 and 100 pixels
    prediction = ObjectBoxInferer()(image, network, boxes=boxes) > 0
    assert prediction.shape == (1, 1, 40, 60) and int(prediction.sum()) == 10 * 20 + 10 * 10
    single = ObjectBoxInferer()(image, network, boxes=boxes[:, 0])
    assert int((single > 0).sum()) == 200, "the first box alone"

    class Boxed(torch.nn.Module):
        prompt = "box"

        def forward(self, image, boxes):
            return network(image, boxes)

    assert bool((WholeImageBox(Boxed())(image) > 0).all()), "no boxes: the whole image is the box"


def test_keep_objects_puts_each_box_s_logits_after_the_union_and_split_objects_moves_them_out():
    from pipeline.engine.task import SplitObjectsd

    def network(image, boxes):
        logits = torch.full((1, boxes.shape[1], *image.shape[-2:]), -1.0)
        for k, (x0, y0, x1, y1) in enumerate(boxes[0].long().tolist()):
            logits[0, k, y0 : y1 + 1, x0 : x1 + 1] = 1.0
        return logits

    image = torch.zeros(1, 3, 20, 30)
    boxes = torch.tensor([[[0.0, 0.0, 4.0, 4.0], [10.0, 10.0, 19.0, 14.0]]])
    kept = ObjectBoxInferer(keep_objects=True)(image, network, boxes=boxes)
    assert kept.shape == (1, 3, 20, 30)
    assert torch.equal(kept[:, :1], ObjectBoxInferer()(image, network, boxes=boxes)), "channel 0 is the union"
    split = SplitObjectsd()({"pred": (kept[0] > 0).float()})
    assert split["pred"].shape == (1, 20, 30) and split["objects"].shape == (2, 20, 30)
    assert [int(m.sum()) for m in split["objects"]] == [25, 50]
    single = ObjectBoxInferer(keep_objects=True)(image, network, boxes=boxes[:, :1])
    assert single.shape == (1, 1, 20, 30) and "objects" not in SplitObjectsd()({"pred": single[0]})
