"""The bundles' LR schedule: without warmup, step for step the per-epoch cosine every run before it trained with;
with it, the first steps scaled up linearly from a tenth, the rest unchanged."""

from __future__ import annotations

import pytest
import torch

from pipeline.engine.schedule import WARMUP_START, warmup_cosine


def optimizer(lrs=(1e-3, 1e-4)):
    """Two parameter groups (head and adapters) at their own LRs."""
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def per_iteration(scheduler, optimizer, steps):
    """Each group's LR at every optimiser step, the scheduler stepped after each (``LrScheduleHandler``,
    ``epoch_level=False``)."""
    lrs = []
    for _ in range(steps):
        lrs.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        scheduler.step()
    return lrs


def test_without_warmup_every_step_runs_at_the_per_epoch_cosine_the_earlier_runs_trained_with():
    max_epochs, steps_per_epoch = 7, 3
    before = optimizer()
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(before, T_max=max_epochs)
    expected = []
    for _ in range(max_epochs):  # stepped once per epoch, as LrScheduleHandler(epoch_level=True) did
        expected += [tuple(group["lr"] for group in before.param_groups)] * steps_per_epoch
        before.step()
        cosine.step()
    now = optimizer()
    found = per_iteration(warmup_cosine(now, max_epochs, steps_per_epoch), now, max_epochs * steps_per_epoch)
    assert sum(found, ()) == pytest.approx(sum(expected, ()), rel=1e-12)
    assert found[steps_per_epoch - 1] == found[0] and found[steps_per_epoch] < found[0], "constant within an epoch"


def test_warmup_rises_linearly_from_a_tenth_then_leaves_the_schedule_as_it_was():
    max_epochs, steps_per_epoch, warmup = 4, 5, 8
    plain, warmed = optimizer(), optimizer()
    without = per_iteration(warmup_cosine(plain, max_epochs, steps_per_epoch), plain, max_epochs * steps_per_epoch)
    found = per_iteration(warmup_cosine(warmed, max_epochs, steps_per_epoch, warmup_steps=warmup), warmed,
                          max_epochs * steps_per_epoch)
    assert found[0] == pytest.approx([WARMUP_START * lr for lr in without[0]], rel=1e-12) and WARMUP_START == 0.1
    for step in range(warmup):
        factor = WARMUP_START + (1 - WARMUP_START) * step / warmup
        assert found[step] == pytest.approx([factor * lr for lr in without[step]], rel=1e-12), step
    assert found[warmup:] == without[warmup:]
    assert found[warmup - 1][0] < without[warmup - 1][0], "the warmup's last step is still below the full LR"
