"""Box prompts from label maps (MedSAM protocol): tight at evaluation, widened by 0..jitter pixels in training."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models import boxes_from_labels


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


def test_empty_label_is_an_error():
    labels = _labels()
    labels[1] = 0
    with pytest.raises(PipelineError, match="label 1 of the batch has no foreground"):
        boxes_from_labels(labels)
