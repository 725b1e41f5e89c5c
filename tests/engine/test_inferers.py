"""``ObjectBoxInferer`` (one logit map per box, united) and ``WholeImageBox`` (no boxes: the whole image)."""

from __future__ import annotations

import pytest
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


class _BoxEcho(torch.nn.Module):
    """A box-prompted stand-in: logit +1 inside each slice's box, -1 outside, and every call recorded."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images, boxes):
        self.calls.append((images[:, 0, 0, 0].tolist(), boxes.tolist()))
        per_image = boxes.reshape(images.shape[0], -1, 4)
        out = -torch.ones(*per_image.shape[:2], *images.shape[-2:])
        for index, image_boxes in enumerate(per_image.round().long().tolist()):
            for k, (x0, y0, x1, y1) in enumerate(image_boxes):
                out[index, k, y0 : y1 + 1, x0 : x1 + 1] = 1.0
        return out


def _volume(slices=8):
    volume = torch.zeros(1, 1, 10, 12, slices)
    volume[0, 0, 0, 0] = torch.arange(slices, dtype=torch.float32)  # each slice says which it is
    return volume


def test_a_3d_box_prompts_every_slice_it_spans_and_leaves_the_rest_background():
    from pipeline.engine.inferers import NO_OBJECT, VolumeBoxInferer

    network = _BoxEcho()
    boxes = torch.tensor([[[2.0, 1.0, 2.0, 2.0, 5.0, 4.0, 4.0], [1.0, 6.0, 6.0, 3.0, 8.0, 8.0, 3.0]]])
    logits = VolumeBoxInferer(num_classes=3, slice_batch_size=2)(_volume(), network, boxes=boxes)
    assert logits.shape == (1, 3, 10, 12, 8)
    assert torch.all(logits[0, 0] == 0), "background is the constant 0 of the argmax"
    label = logits[0].argmax(dim=0)
    assert torch.all(label[2:5, 1:6, 2:5] == 2) and int((label == 2).sum()) == 3 * 5 * 3, "rows y, columns x"
    assert torch.all(label[6:9, 6:9, 3] == 1) and int((label == 1).sum()) == 9
    assert logits[0, 2, 0, 0, 0] == NO_OBJECT and logits[0, 1, 0, 0, 0] == NO_OBJECT
    seen = sorted(int(index) for images, _ in network.calls for index in images)
    assert seen == [2, 3, 4], "only the slices inside a box are run, each once with all the boxes spanning it"
    assert [len(boxes[0]) for images, boxes in network.calls if 3 in images] == [2]


def test_propagation_prompts_the_key_slice_with_the_box_and_the_others_with_their_neighbour_s_mask():
    from pipeline.engine.inferers import VolumeBoxInferer

    class Shrinking(_BoxEcho):
        """Predicts the box less one pixel on each side, so each propagated box is the previous one shrunk."""

        def forward(self, images, boxes):
            self.calls.append((images[:, 0, 0, 0].tolist(), boxes.tolist()))
            out = -torch.ones(images.shape[0], 1, *images.shape[-2:])
            for index, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                out[index, 0, y0 + 1 : y1, x0 + 1 : x1] = 1.0
            return out

    network = Shrinking()
    boxes = torch.tensor([[[1.0, 0.0, 0.0, 1.0, 11.0, 9.0, 5.0]]])
    VolumeBoxInferer(num_classes=2, propagate=True)(_volume(), network, boxes=boxes)
    order = [(int(images[0]), box[0]) for images, box in network.calls]
    assert [z for z, _ in order] == [3, 4, 5, 2, 1], "the middle slice first, then up, then down"
    assert order[0][1] == [0.0, 0.0, 11.0, 9.0], "the key slice gets the 3D box's extent"
    margin = 3 / 256 * 12
    assert order[1][1] == [1.0 - margin, 1.0 - margin, 10.0 + margin, 8.0 + margin], "the neighbour's mask box"
    assert order[3][1] == order[1][1], "going down starts again from the key slice's mask"


def test_3d_box_prompting_refuses_boxes_it_cannot_place():
    from pipeline.engine.inferers import VolumeBoxInferer
    from pipeline.errors import PipelineError

    inferer = VolumeBoxInferer(num_classes=2)
    with pytest.raises(PipelineError, match=r"a box prompts class 2, but the model has classes 1..1"):
        inferer(_volume(), _BoxEcho(), boxes=torch.tensor([[[2.0, 0, 0, 0, 1, 1, 1]]]))
    with pytest.raises(PipelineError, match=r"boxes \(1, N, 7\)"):
        inferer(_volume(), _BoxEcho(), boxes=torch.zeros(1, 4))


def test_propagate_reads_a_yes_no_flag_as_the_command_line_gives_it_and_the_network_gets_plain_tensors():
    from monai.data import MetaTensor

    from pipeline.engine.inferers import VolumeBoxInferer
    from pipeline.errors import PipelineError

    assert VolumeBoxInferer(propagate="false").propagate is False and VolumeBoxInferer(propagate="true").propagate
    with pytest.raises(PipelineError, match=r"propagate must be true or false"):
        VolumeBoxInferer(propagate="maybe")
    network = _BoxEcho()
    seen = []
    network.register_forward_pre_hook(lambda module, args, kwargs: seen.append(type(args[0])), with_kwargs=True)
    logits = VolumeBoxInferer()(MetaTensor(_volume()), network, boxes=torch.tensor([[[1.0, 0, 0, 0, 3, 3, 1]]]))
    assert seen == [torch.Tensor] and isinstance(logits, MetaTensor), "metadata comes back on the output only"
