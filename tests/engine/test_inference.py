"""``PredictionWriter`` driven by a minimal ``Engine`` on tiny tensors (no bundle, no backbone)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

from pipeline.engine.inference import PredictionWriter


def test_prediction_writer_writes_each_case_of_each_batch_in_its_input_format(tmp_path):
    """A batch is a list of cases (decollated, as after ``Invertd``); every case's prediction lands under its name."""
    mask = torch.zeros(1, 6, 8)
    mask[0, 1:4, 2:7] = 1
    png = MetaTensor(torch.rand(3, 6, 8), meta={"filename_or_obj": "/data/images/polyp_01.jpg"})
    volume = torch.zeros(1, 4, 5, 3)
    volume[0, 1:3, 2:4, 1] = 2
    affine = torch.diag(torch.tensor([0.5, 0.5, 2.0, 1.0]))
    nifti = MetaTensor(torch.rand(1, 4, 5, 3), affine=affine, meta={"filename_or_obj": "/data/ct/case_7.nii.gz"})
    batches = [[{"image": png}], [{"image": nifti}, {"image": png.clone()}]]
    predictions = iter([[{"pred": mask}], [{"pred": volume}, {"pred": 1 - mask}]])

    writer = PredictionWriter(str(tmp_path))
    engine = Engine(lambda engine, batch: next(predictions))
    writer.attach(engine)
    engine.run(batches, max_epochs=1)

    assert sorted(p.name for p in writer.written) == [
        "case_7.nii.gz", "polyp_01_mask.png", "polyp_01_mask.png", "polyp_01_overlay.png", "polyp_01_overlay.png",
    ]
    # the second batch's PNG case overwrote the first (same name): its mask is the complement
    written = np.asarray(Image.open(tmp_path / "polyp_01_mask.png")).T
    assert np.array_equal(written, (1 - mask[0].numpy()) * 255)
    saved = nib.load(tmp_path / "case_7.nii.gz")
    assert np.array_equal(saved.get_fdata(), volume[0].numpy()) and np.allclose(saved.affine, affine.numpy())
