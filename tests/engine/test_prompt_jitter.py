"""PromptBoxd's training jitter: it moves each side of the tight box outwards by 0..jitter pixels, clipped to the image.

The reproducibility test in test_box_prompts.py passes just as well without any jitter; these catch that mutant
(all draws equal to the tight box) and ones that shift inwards, by the wrong amount or out of the image.
"""

from __future__ import annotations

import torch

from pipeline.engine.prompts import PromptBoxd

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
