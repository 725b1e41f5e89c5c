"""Box prompts from label maps (MedSAM protocol): tight at evaluation, widened by 0..jitter pixels in training;
noise pixels dropped and one box per object from real-looking (synthetic) labels.

The jitter tests catch the mutants the reproducibility test passes (all draws equal to the tight box) and ones that
shift inwards, by the wrong amount or out of the image.
"""

from __future__ import annotations

import json

import pytest
import torch
from monai.data import MetaTensor

from pipeline.engine.prompts import PromptBoxd, boxes_from_labels
from pipeline.errors import PipelineError


def _labels():
    labels = torch.zeros(2, 1, 20, 30)
    labels[0, 0, 3:8, 5:12] = 1  # rows 3..7, cols 5..11
    labels[1, 0, 0:20, 25:30] = 2  # touches the image border
    return labels


def test_tight_boxes_are_inclusive_xyxy():
    boxes = boxes_from_labels(_labels())
    assert boxes.tolist() == [[5.0, 3.0, 11.0, 7.0], [25.0, 0.0, 29.0, 19.0]]


def test_jitter_only_widens_and_stays_inside():
    tight = boxes_from_labels(_labels())
    widened = [boxes_from_labels(_labels(), jitter=3) for _ in range(20)]
    for boxes in widened:
        assert (boxes[:, :2] <= tight[:, :2]).all() and (boxes[:, 2:] >= tight[:, 2:]).all()
        assert (tight[:, :2] - boxes[:, :2]).max() <= 3 and (boxes[:, 2:] - tight[:, 2:]).max() <= 3
        assert boxes.min() >= 0 and (boxes[:, [0, 2]] <= 29).all() and (boxes[:, [1, 3]] <= 19).all()
    assert len({tuple(boxes[0].tolist()) for boxes in widened}) > 1, "jitter must vary"


def test_a_jitter_of_one_moves_each_side_by_zero_or_one_pixel_away_from_the_borders():
    labels = torch.zeros(1, 20, 30)
    labels[0, 8:12, 10:20] = 1  # rows 8..11, cols 10..19: far from every border, so nothing is clipped
    generator = torch.Generator().manual_seed(0)
    boxes = torch.cat([boxes_from_labels(labels, jitter=1, generator=generator) for _ in range(100)])
    tight = torch.tensor([10.0, 8.0, 19.0, 11.0])
    for side, outwards in enumerate((-1, -1, 1, 1)):
        assert set((boxes[:, side] - tight[side]).mul(outwards).tolist()) == {0.0, 1.0}, f"side {side}"


def test_empty_label_is_an_error():
    labels = _labels()
    labels[1] = 0
    with pytest.raises(PipelineError, match="label 1 of the batch has no foreground"):
        boxes_from_labels(labels)


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
    assert boxes.tolist() == [[30.0, 10.0, 49.0, 19.0], [5.0, 25.0, 14.0, 34.0]], "one box per object, raster order"


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


def test_without_a_label_the_whole_image_is_the_box_only_when_asked_and_prompt_free_items_pass_through():
    image = MetaTensor(torch.zeros(3, 40, 60), meta={"filename_or_obj": "new_frame.jpg"})
    with pytest.raises(PipelineError, match=r"new_frame.jpg: this model is box-prompted .* pass --box x0,y0,x1,y1"):
        PromptBoxd()({"image": image})
    assert PromptBoxd(whole_image=True)({"image": image})["box"].tolist() == [0.0, 0.0, 59.0, 39.0]
    assert PromptBoxd(per_object=True, whole_image="true")({"image": image})["box"].tolist() == [[0.0, 0.0, 59.0, 39.0]]
    item = {"image": image, "label": synthetic_label()}
    out = PromptBoxd(prompt="none")(item)
    assert out.keys() == item.keys() and out["label"] is item["label"], "prompt-free models get no box key"


HEIGHT, WIDTH, JITTER = 20, 30, 4
TIGHT = (2, 1, 27, 12)  # x0, y0, x1, y1: near the left, top and right edges, so clipping shows on three sides


def draws(count: int = 200, per_object: bool = False) -> torch.Tensor:
    label = torch.zeros(1, HEIGHT, WIDTH)
    x0, y0, x1, y1 = TIGHT
    label[0, y0 : y1 + 1, x0 : x1 + 1] = 1
    transform = PromptBoxd(jitter=JITTER, per_object=per_object).set_random_state(0)
    return torch.stack([transform({"label": label})["box"].reshape(4) for _ in range(count)])


def test_jitter_changes_the_box_between_draws():
    boxes = draws()
    tight = torch.tensor(TIGHT, dtype=torch.float32)
    assert not bool((boxes == tight).all(dim=1).all()), "jitter > 0 must not always give the tight box"
    assert len({tuple(box.tolist()) for box in boxes}) > 10
    assert len({tuple(box.tolist()) for box in draws(20, per_object=True)}) > 1, "per-object boxes are jittered too"


def test_jitter_moves_each_side_outwards_within_bounds_and_clips_to_the_image():
    boxes = draws()
    x0, y0, x1, y1 = TIGHT
    ranges = [  # every value each side may take: outwards by 0..JITTER, clipped to the image
        set(range(max(x0 - JITTER, 0), x0 + 1)),
        set(range(max(y0 - JITTER, 0), y0 + 1)),
        set(range(x1, min(x1 + JITTER, WIDTH - 1) + 1)),
        set(range(y1, min(y1 + JITTER, HEIGHT - 1) + 1)),
    ]
    for side, allowed in enumerate(ranges):
        seen = {int(value) for value in boxes[:, side].tolist()}
        assert seen == allowed, f"side {side}: drew {sorted(seen)}, the jitter allows exactly {sorted(allowed)}"


def test_user_boxes_reach_the_model_grid_through_the_image_s_own_resizing_and_axis_swap():
    """A box in original (x, y) pixels, drawn as a mask on the loaded (C, x, y) grid, comes out of the bundle's
    Transposed + Resized(longest) + SpatialPadd chain as the box of the resized image, one per channel, even where
    two boxes overlap."""
    from monai.transforms import Compose, Resized, SpatialPadd, Transposed

    from pipeline.engine.prompts import BoxMaskd

    image = MetaTensor(torch.zeros(3, 200, 100))  # PILReader layout: width 200 (x), height 100 (y)
    keys = ["image", "box_mask"]
    chain = Compose([
        BoxMaskd(),
        Transposed(keys, indices=[0, 2, 1]),
        Resized(keys, spatial_size=50, size_mode="longest", mode=["area", "nearest"]),
        SpatialPadd(keys, spatial_size=[50, 50], method="end"),
        PromptBoxd(per_object=True),
    ])
    out = chain({"image": image, "prompt_boxes": [[20, 10, 119, 59], [100, 40, 179, 99]]})
    assert out["image"].shape == (3, 50, 50) and "box_mask" not in out
    # scaled by 50/200 with x kept as x; y0 = 10 -> 2.5 lands on the first whole pixel inside, 3
    assert out["box"].tolist() == [[5.0, 3.0, 29.0, 14.0], [25.0, 10.0, 44.0, 24.0]]
    assert out["prompt_boxes"].tolist() == [[20.0, 10.0, 119.0, 59.0], [100.0, 40.0, 179.0, 99.0]], "kept for drawing"
    tiny = MetaTensor(torch.zeros(3, 200, 100), meta={"filename_or_obj": "wide.jpg"})
    with pytest.raises(RuntimeError) as raised:  # Compose wraps it; python -m pipeline run prints the cause alone
        chain({"image": tiny, "prompt_boxes": [[20, 10, 119, 59], [101, 41, 102, 42]]})
    assert isinstance(raised.value.__cause__, PipelineError)
    assert str(raised.value.__cause__).startswith("wide.jpg: box 2 is narrower than one pixel of the model's input")


def test_a_box_outside_the_image_names_the_file_and_a_side_past_the_border_is_cut():
    from pipeline.engine.prompts import BoxMaskd

    image = MetaTensor(torch.zeros(3, 60, 40), meta={"filename_or_obj": "frame.jpg"})
    with pytest.raises(PipelineError, match=r"frame.jpg: box \[60, 0, 70, 10\] lies outside the 60x40 image"):
        BoxMaskd()({"image": image, "prompt_boxes": [[60, 0, 70, 10]]})
    mask = BoxMaskd()({"image": image, "prompt_boxes": [[50, 30, 60, 40]]})["box_mask"]
    assert mask.shape == (1, 60, 40) and int(mask.sum()) == 10 * 10


@pytest.mark.parametrize(("value", "box"), [("38,5,430,338", [38.0, 5.0, 430.0, 338.0]),
                                            ((1, 2, 3, 4), [1.0, 2.0, 3.0, 4.0]), ("1 2 3.5 4", [1.0, 2.0, 3.5, 4.0]),
                                            ("1,2,3,4,5,6", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])])
def test_a_box_is_read_from_the_forms_a_command_line_gives(value, box):
    from pipeline.engine.prompts import parse_box

    assert parse_box(value) == box


@pytest.mark.parametrize("value", ["1,2,3", "5,2,3,4", "1,5,3,4", "a,b,c,d", "-1,0,3,4", None, "1,2,3,4,5",
                                   "1,2,7,4,5,6", "1,2,3,4,1,6", "1,2,3,4,5,2"])
def test_a_malformed_box_is_one_error_naming_the_option(value):
    from pipeline.engine.prompts import parse_box

    with pytest.raises(PipelineError, match=r"^--box: a box is x0,y0,x1,y1 \(2D\) or x0,y0,z0,x1,y1,z1 \(3D\)"):
        parse_box(value)


def test_prompts_files_in_json_csv_and_kvasir_layout_map_inputs_to_their_boxes(tmp_path):
    from pipeline.engine.prompts import read_prompts

    (tmp_path / "a.json").write_text(json.dumps({"one.jpg": [1, 2, 3, 4], "two.png": [[0, 0, 5, 5], [6, 6, 9, 9]],
                                                 "three": {"bbox": [{"xmin": 1, "ymin": 1, "xmax": 8, "ymax": 9}]}}))
    (tmp_path / "b.csv").write_text("image,x0,y0,x1,y1\none.jpg,1,2,3,4\none.jpg,5,6,7,8\n")
    table = read_prompts(tmp_path / "a.json")
    assert table.of("some/dir/one.jpg") == ([[1.0, 2.0, 3.0, 4.0]], [None])
    assert table.of("two.png") == ([[0.0, 0.0, 5.0, 5.0], [6.0, 6.0, 9.0, 9.0]], [None, None])
    assert table.of("images/three.jpg") == ([[1.0, 1.0, 8.0, 9.0]], [None]), "Kvasir's bbox JSON keys by stem"
    assert table.of("four.jpg") is None
    assert read_prompts(tmp_path / "b.csv").boxes == {"one.jpg": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]}
    (tmp_path / "bad.csv").write_text("name,a\nx,1\n")
    with pytest.raises(PipelineError, match=r"bad.csv: a CSV needs a header image,x0,y0,x1,y1"):
        read_prompts(tmp_path / "bad.csv")
    (tmp_path / "c.csv").write_text("image,x0,y0,z0,x1,y1,z1\nct.nii.gz,1,2,3,4,5,6\n")
    assert read_prompts(tmp_path / "c.csv").boxes == {"ct.nii.gz": [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]}, "a volume's box"
    (tmp_path / "bad.json").write_text(json.dumps({"one.jpg": [3, 2, 1, 4]}))
    with pytest.raises(PipelineError, match=r"bad.json, entry 'one.jpg': a box is x0,y0,x1,y1"):
        read_prompts(tmp_path / "bad.json")
    with pytest.raises(PipelineError, match=r"prompts file .*missing.json does not exist \(--prompts\)"):
        read_prompts(tmp_path / "missing.json")


def test_a_3d_box_moves_with_the_volume_into_the_slice_layout_and_comes_out_as_x_y_z():
    """A user box in voxel indices (x, y, z) of the loaded (C, x, y, z) volume, through the slice bundle's axial
    layout (C, y, x, z), is read back as the same (x, y, z) box: x along the columns, y down the rows."""
    from monai.transforms import Compose, Transposed

    from pipeline.data.slices import slice_layout
    from pipeline.engine.prompts import BoxMaskd, VolumeBoxesd

    image = MetaTensor(torch.zeros(1, 30, 20, 10))
    chain = Compose([BoxMaskd(), Transposed(["image", "box_mask"], indices=slice_layout(2)), VolumeBoxesd()])
    out = chain({"image": image, "prompt_boxes": [[3, 4, 5, 12, 15, 8], [0, 0, 0, 29, 19, 9]]})
    assert out["image"].shape == (1, 20, 30, 10) and "box_mask" not in out
    assert out["box"].tolist() == [[1.0, 3.0, 4.0, 5.0, 12.0, 15.0, 8.0], [1.0, 0.0, 0.0, 0.0, 29.0, 19.0, 9.0]]
    flat = MetaTensor(torch.zeros(1, 30, 20), meta={"filename_or_obj": "frame.png"})
    with pytest.raises(PipelineError, match=r"frame.png has 2 spatial axes, so its boxes are x0,y0,x1,y1"):
        BoxMaskd()({"image": flat, "prompt_boxes": [[1, 2, 3, 4, 5, 6]]})
    with pytest.raises(PipelineError, match=r"lies outside the 30x20x10 image"):
        BoxMaskd()({"image": image, "prompt_boxes": [[1, 2, 10, 4, 5, 12]]})


def test_prompts_files_give_each_box_the_class_they_name(tmp_path):
    from pipeline.engine.prompts import read_prompts

    (tmp_path / "a.csv").write_text("image,x0,y0,z0,x1,y1,z1,class\nhip.nii.gz,1,2,3,4,5,6,posterior\n"
                                    "hip.nii.gz,0,0,0,2,2,2,\n")
    assert read_prompts(tmp_path / "a.csv").of("hip.nii.gz") == (
        [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]], ["posterior", None])
    (tmp_path / "b.json").write_text(json.dumps({"hip.nii.gz": [{"box": [1, 2, 3, 4, 5, 6], "class": "anterior"},
                                                         {"box": [0, 0, 0, 2, 2, 2], "class": 2}],
                                                 "other": {"box": [1, 1, 1, 2, 2, 2]}}))
    table = read_prompts(tmp_path / "b.json")
    assert table.of("hip.nii.gz") == ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0, 0.0, 0.0, 2.0, 2.0, 2.0]],
                                      ["anterior", "2"])
    assert table.of("other.nii.gz") == ([[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]], [None]), "a NIfTI's stem drops .nii.gz"


def test_a_multi_class_model_s_box_must_name_a_class_of_the_model():
    from pipeline.engine.prompts import box_classes

    names = ["anterior", "posterior"]
    assert box_classes(["posterior", "anterior", "2", "1"], names, "--box") == [2, 1, 2, 1]
    with pytest.raises(PipelineError, match=r"^p.csv, hip.nii.gz: this model segments 2 classes \(anterior, "
                                            r"posterior\), so each box needs its class: --box_class NAME"):
        box_classes(["posterior", None], names, "p.csv, hip.nii.gz")
    for bad in ("liver", "0", "3"):
        with pytest.raises(PipelineError, match=rf"^--box: box class '{bad}' is not one of this model's classes"):
            box_classes([bad], names, "--box")
    assert box_classes([None, "liver", "1"], ["liver"], "--box") == [1, 1, 1], "one class: every box is it"
    assert box_classes([None, None], None, "--box") == [1, 1]
    with pytest.raises(PipelineError, match=r"^--box: this model takes no class for its boxes"):
        box_classes(["posterior"], None, "--box")


def test_user_boxes_prompt_the_classes_given_for_them():
    from monai.transforms import Compose, Transposed

    from pipeline.data.slices import slice_layout
    from pipeline.engine.prompts import BoxMaskd, VolumeBoxesd

    layout = Transposed(["image", "box_mask"], indices=slice_layout(2))
    chain = Compose([BoxMaskd(), layout, VolumeBoxesd(num_classes=3)])
    data = {"image": MetaTensor(torch.zeros(1, 8, 9, 6)), "prompt_boxes": [[1, 2, 3, 4, 5, 5], [0, 0, 0, 2, 2, 2]],
            "prompt_classes": [2, 1]}
    out = chain(data)
    assert out["box"].tolist() == [[2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0], [1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0]]
    assert "prompt_classes" not in out


def test_volume_boxes_from_a_label_give_each_present_class_its_tight_box_and_nothing_for_an_absent_one():
    from pipeline.engine.prompts import NO_CLASS, VolumeBoxesd

    label = torch.zeros(1, 8, 9, 6)  # (C, rows, columns, slices)
    label[0, 1:3, 2:5, 1:4] = 1
    label[0, 5, 7, 5] = 3
    image = MetaTensor(torch.zeros(1, 8, 9, 6), meta={"filename_or_obj": "case.nii.gz"})
    rows = VolumeBoxesd(num_classes=4)({"image": image, "label": label})["box"].tolist()
    assert rows == [[1.0, 2.0, 1.0, 1.0, 4.0, 2.0, 3.0], [3.0, 7.0, 5.0, 5.0, 7.0, 5.0, 5.0]], "class 2 is absent"
    empty = VolumeBoxesd(num_classes=4)({"image": image, "label": torch.zeros(1, 8, 9, 6)})["box"]
    assert empty[:, 0].tolist() == [NO_CLASS]
    assert "box" not in VolumeBoxesd(prompt="none")({"image": image, "label": label})
    with pytest.raises(PipelineError, match=r"^case.nii.gz: this model is box-prompted and the volume has no label"):
        VolumeBoxesd()({"image": image})
    whole = VolumeBoxesd(whole_image=True)({"image": image})["box"].tolist()
    assert whole == [[1.0, 0.0, 0.0, 0.0, 8.0, 7.0, 5.0]]


def test_rand_class_mask_makes_one_present_class_the_object_and_draws_every_class():
    from pipeline.engine.prompts import RandClassMaskd

    label = torch.zeros(1, 4, 4)
    label[0, 0, :2], label[0, 3, 3] = 1, 2
    pick = RandClassMaskd()
    pick.set_random_state(0)
    seen = set()
    for _ in range(20):
        out = pick({"label": label})["label"]
        assert set(out.unique().tolist()) == {0.0, 1.0}
        seen.add(int(out.sum()))  # 2 pixels: class 1, 1 pixel: class 2
    assert seen == {1, 2}
    assert torch.equal(RandClassMaskd(prompt="none")({"label": label})["label"], label)
    assert torch.equal(pick({"label": torch.zeros(1, 4, 4)})["label"], torch.zeros(1, 4, 4))
