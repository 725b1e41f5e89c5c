"""Inference inputs and splits: every format the datalist pairs is listed and read for inference; inputs that would
silently give wrong outputs (clashing output names, leaking test cases) are refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import MetaTensor
from PIL import Image

from pipeline.data.datalist import build_datalist
from pipeline.data.formats import IMAGE_2D_SUFFIXES, VOLUME_SUFFIXES
from pipeline.data.readers import LoadClinicalImaged
from pipeline.engine.cases import held_out, inference_inputs, load_split
from pipeline.engine.inference import PredictionWriter
from pipeline.errors import PipelineError


def _image(path, seed=0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return str(path)


def _write(writer: PredictionWriter, items: list[dict]) -> None:
    """Feed ``items`` (each with its image path) to the writer as one decollated evaluator iteration."""
    batch = [{**item, "image": MetaTensor(np.zeros((3, 8, 8), np.float32), meta={"filename_or_obj": item["image"]})}
             for item in items]
    output = [{"pred": MetaTensor(np.eye(8, dtype=np.float32)[None])} for _ in items]
    writer(SimpleNamespace(state=SimpleNamespace(batch=batch, output=output)))


def test_inputs_with_the_same_stem_get_distinct_outputs(tmp_path):
    _image(tmp_path / "in" / "case1.png", 0)
    _image(tmp_path / "in" / "case1.jpg", 1)
    _image(tmp_path / "in" / "case2.png", 2)
    items = inference_inputs(tmp_path / "in")
    writer = PredictionWriter(str(tmp_path / "out"))
    _write(writer, items)
    names = sorted(p.name for p in writer.written)
    assert names == ["case1_jpg_mask.png", "case1_jpg_overlay.png", "case1_png_mask.png", "case1_png_overlay.png",
                     "case2_mask.png", "case2_overlay.png"]


def test_held_out_series_folders_with_the_same_name_get_distinct_outputs(tmp_path):
    for patient in ("p1", "p2"):
        _image(tmp_path / patient / "ct" / "slice.png")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"training": [{"image": "p1/ct/slice.png"}],
                                 "test": [{"image": "p1/ct"}, {"image": "p2/ct"}]}))
    names = [item["output_name"] for item in inference_inputs(dataset_dir=tmp_path, split=split)]
    assert names == ["p1_ct", "p2_ct"]


def test_the_writer_stops_before_overwriting_another_input_s_output(tmp_path):
    first, second = _image(tmp_path / "a" / "case1.png"), _image(tmp_path / "b" / "case1.png")
    writer = PredictionWriter(str(tmp_path / "out"))
    with pytest.raises(PipelineError, match=r"b/case1.png: its output name 'case1' is taken by .*a/case1.png"):
        _write(writer, [{"image": first}, {"image": second}])
    assert sorted(p.name for p in writer.written) == ["case1_mask.png", "case1_overlay.png"]


def test_split_whose_test_cases_overlap_training_or_validation_is_refused(tmp_path):
    for name in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{name}.png")
    split = tmp_path / "split.json"
    case = lambda n: {"image": f"images/{n}.png"}  # noqa: E731
    split.write_text(json.dumps({"training": [case("a"), case("b")], "validation": [case("c")],
                                 "test": [case("b"), case("c")]}))
    with pytest.raises(PipelineError, match=r"split.json: 2 test cases are also in training or validation: "
                                            r"\['images/b.png', 'images/c.png'\]"):
        load_split(tmp_path, split)


def test_names_that_cannot_be_told_apart_stop_before_anything_is_written():
    from pipeline.engine.inference import case_names

    with pytest.raises(
        PipelineError, match=r"in/case1_png.tif: gives the same output name 'case1_png' as in/case1.png"
    ):
        case_names(["in/case1.png", "in/case1.jpg", "in/case1_png.tif"])


def test_split_naming_a_missing_image_is_one_clear_error(synthetic_folder):
    split = synthetic_folder / "split.json"
    split.write_text(json.dumps({"training": [{"image": "images/a.png"}], "test": [{"image": "images/gone.png"}]}))
    with pytest.raises(PipelineError, match="names image 'images/gone.png', which does not exist"):
        load_split(synthetic_folder, split)


def test_split_paths_are_resolved_against_the_dataset_folder(synthetic_folder):
    split = synthetic_folder / "split.json"
    (synthetic_folder / "images" / "b.png").write_bytes(b"")
    split.write_text(json.dumps({"training": [{"image": "images/b.png"}], "test": [{"image": "images/a.png"}]}))
    resolved = load_split(synthetic_folder, split)
    assert resolved["training"][0]["image"] == str(synthetic_folder / "images" / "b.png")
    assert held_out(resolved) == resolved["test"]


def _volume(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)  # SimpleITK arrays are (z, y, x)
    image.SetSpacing((0.5, 1.0, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize("suffix", VOLUME_SUFFIXES)
def test_inference_reads_every_volume_format_the_datalist_pairs(tmp_path, suffix):
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    _volume(tmp_path / "imagesTr" / f"case{suffix}", array)
    _volume(tmp_path / "labelsTr" / f"case{suffix}", (array % 2).astype(np.uint8))
    assert build_datalist(tmp_path)["training"] == [{"image": f"imagesTr/case{suffix}",
                                                     "label": f"labelsTr/case{suffix}"}]
    items = inference_inputs(tmp_path / "imagesTr")
    assert [Path(item["image"]).name for item in items] == [f"case{suffix}"]
    image = LoadClinicalImaged("image")(items[0])["image"]
    assert np.array_equal(image[0].numpy(), np.transpose(array, (2, 1, 0))), "voxels in (x, y, z) order"
    ras = np.array([[-0.5, 0, 0, -1.0], [0, -1.0, 0, -2.0], [0, 0, 2.0, 3.0], [0, 0, 0, 1]])
    assert np.allclose(image.affine.numpy(), ras), "every volume format gives the same RAS affine"


@pytest.mark.parametrize("suffix", IMAGE_2D_SUFFIXES)
def test_inference_reads_every_2d_format_the_datalist_pairs(tmp_path, suffix):
    frame = np.zeros((6, 8, 3), np.uint8)
    frame[1:4, 2:6] = 200
    for folder, array in (("images", frame), ("masks", np.where(frame[..., 0] > 0, 255, 0).astype(np.uint8))):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / f"case{suffix}")
    assert build_datalist(tmp_path)["training"] == [{"image": f"images/case{suffix}", "label": f"masks/case{suffix}"}]
    items = inference_inputs(tmp_path / "images")
    assert [Path(item["image"]).name for item in items] == [f"case{suffix}"]
    assert LoadClinicalImaged("image")(items[0])["image"].shape == (3, 8, 6)


def test_box_prompted_inference_takes_the_user_s_boxes_and_refuses_an_input_without_one(tmp_path):
    one = _image(tmp_path / "in" / "one.png", 0)
    _image(tmp_path / "in" / "two.png", 1)
    assert inference_inputs(one, box="1,2,5,6", prompt="box")[0]["prompt_boxes"] == [[1.0, 2.0, 5.0, 6.0]]
    with pytest.raises(PipelineError, match=r"one.png: this model is box-prompted and has no box for it: pass --box"):
        inference_inputs(one, prompt="box")
    assert "prompt_boxes" not in inference_inputs(one, prompt="box", whole_image_box="true")[0]
    assert "prompt_boxes" not in inference_inputs(one)[0], "prompt-free models need no box"
    with pytest.raises(PipelineError, match=r"not box-prompted \(prompt 'none'\): drop --box"):
        inference_inputs(one, box="1,2,5,6")
    with pytest.raises(PipelineError, match=r"--box gives the box of one input image, but there are 2 inputs"):
        inference_inputs(tmp_path / "in", box="1,2,5,6", prompt="box")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"one.png": [[0, 0, 3, 3], [4, 4, 7, 7]]}))
    with pytest.raises(PipelineError, match=r"two.png: this model is box-prompted and has no box"):
        inference_inputs(tmp_path / "in", prompts=prompts, prompt="box")
    prompts.write_text(json.dumps({"one.png": [[0, 0, 3, 3], [4, 4, 7, 7]], "two": [1, 1, 2, 2]}))
    cases = inference_inputs(tmp_path / "in", prompts=prompts, prompt="box")
    assert [case["prompt_boxes"] for case in cases] == [[[0.0, 0.0, 3.0, 3.0], [4.0, 4.0, 7.0, 7.0]],
                                                         [[1.0, 1.0, 2.0, 2.0]]]
    assert not any("prompt_classes" in case for case in cases), "a model without box classes gets none"
    with pytest.raises(PipelineError, match=r"^--box: this model takes no class for its boxes"):
        inference_inputs(one, box="1,2,5,6", box_class="polyp", prompt="box")


def test_a_multi_class_model_s_user_boxes_carry_their_classes_and_one_without_stops_the_run(tmp_path):
    one = _image(tmp_path / "in" / "one.png", 0)
    names = ["anterior", "posterior"]
    case = inference_inputs(one, box="1,2,5,6", box_class="posterior", prompt="box", class_names=names)[0]
    assert (case["prompt_boxes"], case["prompt_classes"]) == ([[1.0, 2.0, 5.0, 6.0]], [2])
    with pytest.raises(PipelineError, match=r"^--box: this model segments 2 classes \(anterior, posterior\)"):
        inference_inputs(one, box="1,2,5,6", prompt="box", class_names=names)
    with pytest.raises(PipelineError, match=r"^--box_class is the class of the one --box"):
        inference_inputs(one, box_class="posterior", prompt="box", class_names=names)
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("image,x0,y0,x1,y1,class\none.png,0,0,3,3,anterior\none.png,4,4,7,7,2\n")
    case = inference_inputs(one, prompts=prompts, prompt="box", class_names=names)[0]
    assert case["prompt_classes"] == [1, 2]
    prompts.write_text("image,x0,y0,x1,y1,class\none.png,0,0,3,3,anterior\none.png,4,4,7,7,\n")
    with pytest.raises(PipelineError, match=r"prompts.csv, .*one.png: this model segments 2 classes"):
        inference_inputs(one, prompts=prompts, prompt="box", class_names=names)
    assert inference_inputs(one, box="1,2,5,6", prompt="box", class_names=["liver"])[0]["prompt_classes"] == [1]
