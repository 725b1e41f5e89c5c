"""The bundles' own ignite handlers, each driven by a minimal ``Engine`` on tiny tensors (no bundle, no backbone)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from PIL import Image
from torch import nn

from pipeline.data.slices import SliceDataset
from pipeline.engine.checkpoints import AdapterCheckpoint
from pipeline.engine.inference import PredictionWriter
from pipeline.engine.slices import ResampleSlices
from pipeline.engine.tensorboard import LearningRateWriter
from pipeline.peft import apply_peft
from pipeline.peft.checkpoint import read_adapter
from tests.peft.backbones import SamViT


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


class Wrapped(nn.Module):
    """What DDP looks like to a handler: the model under ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_adapter_checkpoint_saves_only_on_epochs_where_the_metric_improved(tmp_path):
    torch.manual_seed(0)
    network = SamViT()
    apply_peft(network, "lora")
    best_epochs = {1: 1, 2: 1, 3: 3}  # epoch -> best_metric_epoch, as the ValidationHandler leaves it
    path = tmp_path / "model.pt"
    saved = {}

    def train_step(engine, batch):
        with torch.no_grad():
            for parameter in network.parameters():
                if parameter.requires_grad:
                    parameter.add_(1.0)

    engine = Engine(train_step)

    @engine.on(Events.EPOCH_COMPLETED)
    def validate(engine):
        engine.state.best_metric_epoch = best_epochs[engine.state.epoch]

    AdapterCheckpoint(Wrapped(network), str(path)).attach(engine)

    @engine.on(Events.EPOCH_COMPLETED)
    def record(engine):
        saved[engine.state.epoch] = read_adapter(path)["state_dict"] if path.exists() else None

    engine.run([0], max_epochs=3)
    name = network.peft_state.adapter[0]
    value = lambda epoch: saved[epoch][name]  # noqa: E731
    trained = network.get_parameter(name).detach()
    assert saved[1] is not None and set(saved[1]) == set(network.peft_state.adapter + network.peft_state.head)
    assert torch.equal(value(2), value(1)), "epoch 2 did not improve: the epoch-1 weights stay"
    assert torch.equal(value(3), trained) and torch.equal(value(3), value(1) + 2.0)


class RecordingWriter:
    """The two ``SummaryWriter`` calls the handler makes."""

    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1


def test_learning_rate_writer_logs_each_group_by_name_each_epoch():
    adapter, head = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [adapter], "lr": 0.1, "name": "adapter"}, {"params": [head], "lr": 0.01}])

    def train_step(engine, batch):
        if engine.state.epoch == 2:
            optimizer.param_groups[0]["lr"] = 0.05

    engine = Engine(train_step)
    summary = RecordingWriter()
    LearningRateWriter(optimizer, summary).attach(engine)
    engine.run([0, 1], max_epochs=2)
    assert summary.scalars == [("lr/adapter", 0.1, 1), ("lr/1", 0.01, 1), ("lr/adapter", 0.05, 2), ("lr/1", 0.01, 2)]
    assert summary.flushes == 2


def test_resample_slices_redraws_each_epoch_as_a_fresh_dataset_would():
    label = torch.zeros(1, 4, 4, 12)
    label[0, 1:3, 1:3, 5:8] = 1
    volumes = [{"image": torch.rand(1, 4, 4, 12), "label": label}]
    dataset = SliceDataset(volumes, samples_per_volume=4, seed=3)
    drawn = {}

    def train_step(engine, batch):
        drawn[engine.state.epoch] = list(dataset.index)

    engine = Engine(train_step)
    ResampleSlices(dataset).attach(engine)
    engine.run([0], max_epochs=3)

    reference = SliceDataset(volumes, samples_per_volume=4, seed=3)
    for epoch in (1, 2, 3):
        reference.resample(epoch)
        assert drawn[epoch] == reference.index, f"epoch {epoch} must draw what a resumed run draws"
    assert len({tuple(draw) for draw in drawn.values()}) > 1, "the draw changes between epochs"
