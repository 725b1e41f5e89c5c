"""The checkpoint handlers on a toy model: adapter-only saves on improvement, bit-exact resume, nothing executed on
load, one owner per run folder."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from monai.utils import set_determinism
from torch import nn

from pipeline.engine.handlers import AdapterCheckpoint, ResumeState, claim_run_folder, read_resume_state
from pipeline.errors import PipelineError
from pipeline.peft import apply_peft, atomic_save, param_groups, trainable_state_dict
from pipeline.peft.checkpoint import read_adapter
from tests.peft.backbones import SamViT


class Killed(Exception):
    """Stands in for ``kill -9``: the run stops right after a checkpoint, without any handler running."""


def training(path, every_n_iterations=0, kill_at_iteration=None, stop_at_epoch=None, continue_stopped=False):
    """A toy run with every kind of randomness a bundle has: a shuffling loader with its own generator, random
    transforms drawing from their own ``R``, dropout in the adapters (torch's global state). ``stop_at_epoch``
    ends it there as an early stop does (a terminate at that epoch's end, before the state is saved)."""
    set_determinism(seed=0)
    network = SamViT()
    apply_peft(network, "dka", r=4, dropout=0.5)
    optimizer = torch.optim.AdamW(param_groups(network, lr=1e-2))
    data = [{"image": torch.rand(3, 64, 64)} for _ in range(6)]
    transform = Compose([RandGaussianNoised(keys="image", prob=1.0, std=0.5),
                         RandFlipd(keys="image", prob=0.5, spatial_axis=1)])
    loader = DataLoader(Dataset(data, transform), batch_size=2, shuffle=True,
                        generator=torch.Generator().manual_seed(3))

    def step(engine, batch):
        network.train()
        optimizer.zero_grad()
        loss = network(batch["image"]).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    if stop_at_epoch is not None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=stop_at_epoch), lambda engine: engine.terminate())
    ResumeState(str(path), network, optimizer, every_n_iterations=every_n_iterations,
                continue_stopped=continue_stopped).attach(engine)
    if kill_at_iteration is not None:
        @engine.on(Events.ITERATION_COMPLETED(once=kill_at_iteration))
        def kill(_):
            raise Killed

    return engine, loader, network


def trained(path, max_epochs, **options):
    engine, loader, network = training(path, **options)
    engine.run(loader, max_epochs=max_epochs)
    return trainable_state_dict(network)


def assert_equal_tensors(first, second):
    assert set(first) == set(second)
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    assert not differing, f"{len(differing)} of {len(first)} tensors differ, e.g. {differing[:3]}"


@pytest.mark.slow
def test_stopping_after_an_epoch_and_resuming_is_bit_exact(tmp_path):
    straight = trained(tmp_path / "straight.pt", max_epochs=3)
    trained(tmp_path / "resumed.pt", max_epochs=1)
    assert_equal_tensors(straight, trained(tmp_path / "resumed.pt", max_epochs=3))


@pytest.mark.slow
def test_a_kill_within_an_epoch_resumes_bit_exact_from_the_last_iteration_checkpoint(tmp_path):
    straight = trained(tmp_path / "straight.pt", max_epochs=3)
    with pytest.raises(Killed):
        trained(tmp_path / "resumed.pt", max_epochs=3, every_n_iterations=1, kill_at_iteration=5)
    assert read_resume_state(tmp_path / "resumed.pt")["trainer"]["iteration"] == 5, "mid-epoch (3 per epoch)"
    assert_equal_tensors(straight, trained(tmp_path / "resumed.pt", max_epochs=3, every_n_iterations=1))


def test_a_run_an_early_stop_ended_is_not_trained_on_when_rerun_unless_asked(tmp_path):
    stopped = trained(tmp_path / "resume.pt", max_epochs=4, stop_at_epoch=2)
    engine, loader, network = training(tmp_path / "resume.pt")
    engine.run(loader, max_epochs=4)
    assert engine.state.epoch == 2, "rerunning the same command trains nothing"
    assert_equal_tensors(stopped, trainable_state_dict(network))
    assert read_resume_state(tmp_path / "resume.pt")["stopped"] is True

    resumed = trained(tmp_path / "resume.pt", max_epochs=4, continue_stopped=True)  # --resume true
    assert read_resume_state(tmp_path / "resume.pt")["epoch"] == 4
    assert any(not torch.equal(stopped[name], resumed[name]) for name in stopped)
    assert read_resume_state(tmp_path / "resume.pt")["stopped"] is False


class Payload:
    """A pickled object whose unpickling would create ``marker``: what a malicious resume.pt could carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_resume_state_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "resume.pt"
    torch.save({"epoch": 1, "trainer": {}, "network": {}, "optimizer": {}, "rng": Payload(marker)}, path)
    engine, loader, _ = training(path)
    with pytest.raises(PipelineError) as refused:
        engine.run(loader, max_epochs=1)
    assert not marker.exists(), "the payload ran"
    message = str(refused.value)
    assert message.startswith(f"resume state {path} cannot be loaded as plain weights") and "\n" not in message


def test_stale_temporary_files_of_a_killed_save_are_removed_at_start(tmp_path):
    stale = tmp_path / ".resume.pt.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    engine, loader, _ = training(tmp_path / "resume.pt")
    engine.run(loader, max_epochs=1)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume.pt"]


def test_checkpoints_get_the_users_file_mode_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_save({"x": torch.zeros(1)}, tmp_path / "model.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


SETTINGS = {"backbone": "litemedsam", "method": "dka", "method_options": {"r": 8}, "layers": "middle",
            "lr": 1e-4, "split": {"training": [{"image": "a.png"}]}}


def test_a_run_folder_refuses_a_run_with_other_settings_unless_told(tmp_path):
    record = claim_run_folder(tmp_path, {**SETTINGS, "dataset_dir": str(tmp_path)})
    assert json.loads((tmp_path / "run.json").read_text())["fingerprint"] == record
    assert record["split"].startswith("sha256:")
    claim_run_folder(tmp_path, {**SETTINGS, "dataset_dir": str(tmp_path)})  # the same run continues

    other_split = {**SETTINGS, "dataset_dir": str(tmp_path), "split": {"training": [{"image": "b.png"}]}}
    with pytest.raises(PipelineError, match=r"belongs to another run \(split: 'sha256:\w+' there, 'sha256:\w+' now\)"):
        claim_run_folder(tmp_path, other_split)
    with pytest.raises(PipelineError, match=r"method_options.r: 8 there, 4 now"):
        claim_run_folder(tmp_path, {**SETTINGS, "dataset_dir": str(tmp_path), "method_options": {"r": 4}})

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "resume.pt").write_bytes(b"x")
    (tmp_path / "models" / "model.pt").write_bytes(b"x")
    claim_run_folder(tmp_path, other_split, resume=True)
    assert (tmp_path / "models" / "resume.pt").exists(), "--resume true keeps the state to continue from"
    claim_run_folder(tmp_path, {**other_split, "lr": 1e-3}, overwrite=True)
    assert not (tmp_path / "models" / "resume.pt").exists() and not (tmp_path / "models" / "model.pt").exists()
    assert json.loads((tmp_path / "run.json").read_text())["fingerprint"]["lr"] == 1e-3


def test_a_run_folder_records_the_method_options_as_resolved_so_a_changed_default_is_another_run(tmp_path):
    def written_before_options_were_resolved(folder, options):
        settings = {**SETTINGS, "method_options": options}
        split = claim_run_folder(tmp_path / "scratch" / folder.name, settings)["split"]
        folder.mkdir()
        (folder / "run.json").write_text(json.dumps({"fingerprint": {
            **{k: v for k, v in settings.items() if k != "split"}, "split": split}}))
        return settings

    old = tmp_path / "old"  # `dka: {}` then meant PyTorch's init: it is not today's `dka: {}`, which starts at zero
    settings = written_before_options_were_resolved(old, {})
    with pytest.raises(PipelineError, match=r"belongs to another run \(method_options.init: 'paper' there, "
                                            r"'zero' now\)"):
        claim_run_folder(old, settings)
    claim_run_folder(old, {**settings, "method_options": {"init": "paper", "kernel_large": 51}})
    recorded = json.loads((old / "run.json").read_text())["fingerprint"]["method_options"]
    assert (recorded["init"], recorded["kernel_large"], recorded["kernel_small"]) == ("paper", 51, 5)
    with pytest.raises(PipelineError, match=r"belongs to another run \(method_options.init: 'paper' there, "
                                            r"'zero' now\)"):
        claim_run_folder(old, {**settings, "method_options": {"init": "zero"}})

    said = tmp_path / "said"  # an init the old record spelt out is read as written
    claim_run_folder(said, written_before_options_were_resolved(said, {"init": "zero"}) | {"method_options": {}})

    unwarmed = tmp_path / "unwarmed"  # a record from before warmup_steps existed: that run had no warmup
    settings = written_before_options_were_resolved(unwarmed, {"init": "zero"})
    with pytest.raises(PipelineError, match=r"belongs to another run \(warmup_steps: 0 there, 10 now\)"):
        claim_run_folder(unwarmed, {**settings, "warmup_steps": 10})
    claim_run_folder(unwarmed, {**settings, "warmup_steps": 0})


def test_a_run_folder_being_trained_by_another_process_is_refused_until_it_ends(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, json; from pipeline.engine.handlers import claim_run_folder; "
         "claim_run_folder(sys.argv[1], json.loads(sys.argv[2])); print('claimed', flush=True); sys.stdin.read()",
         str(tmp_path), json.dumps(SETTINGS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        (tmp_path / "models").mkdir()
        (tmp_path / "models" / "resume.pt").write_bytes(b"the other process's state")
        with pytest.raises(PipelineError) as error:
            claim_run_folder(tmp_path, SETTINGS, overwrite=True)
        assert str(error.value) == (f"output_dir {tmp_path.resolve()} is being trained by another process "
                                    f"(pid {holder.pid}): wait for it to end, or stop it, before training there")
        assert (tmp_path / "models" / "resume.pt").read_bytes() == b"the other process's state", "nothing deleted"
    finally:
        holder.communicate("")  # the holder ends; the OS releases its lock
    claim_run_folder(tmp_path, SETTINGS)
    claim_run_folder(tmp_path, SETTINGS)  # this process holds it now, and may claim it again


def test_a_run_folder_with_outputs_but_no_record_is_refused(tmp_path):
    (tmp_path / "split.json").write_text("{}")
    with pytest.raises(PipelineError, match="it holds split.json of a run without run.json"):
        claim_run_folder(tmp_path, SETTINGS)


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


def test_resume_state_of_another_method_is_refused_with_one_clear_message(tmp_path):
    from ignite.engine import Engine

    from pipeline.engine.handlers import ResumeState
    from pipeline.errors import PipelineError
    from pipeline.peft import apply_peft, param_groups
    from tests.peft.backbones import SamViT

    def resumable(method):
        torch.manual_seed(0)
        network = SamViT()
        apply_peft(network, method)
        optimizer = torch.optim.AdamW(param_groups(network, lr=1e-3))
        engine = Engine(lambda engine, batch: None)
        ResumeState(str(tmp_path / "resume.pt"), network, optimizer).attach(engine)
        return engine

    resumable("dka").run([0], max_epochs=1)
    assert (tmp_path / "resume.pt").is_file()
    with pytest.raises(PipelineError, match="written by a run with other adapters or options"):
        resumable("lora").run([0], max_epochs=2)
    resumable("dka").run([0], max_epochs=2)  # the same method resumes


def test_a_resume_state_of_another_lr_schedule_is_refused_not_read_as_this_one(tmp_path):
    """A run killed under the per-epoch ``CosineAnnealingLR`` of earlier versions cannot continue under
    ``warmup_cosine``: its step count is in epochs, the new schedule's in iterations (a wrong LR, silently)."""
    from ignite.engine import Engine

    from pipeline.engine.schedule import warmup_cosine

    def resumable(schedule):
        torch.manual_seed(0)
        network = SamViT()
        apply_peft(network, "dka")
        optimizer = torch.optim.AdamW(param_groups(network, lr=1e-3))
        engine = Engine(lambda engine, batch: None)
        ResumeState(str(tmp_path / "resume.pt"), network, optimizer, lr_scheduler=schedule(optimizer)).attach(engine)
        return engine

    def before(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)

    def now(optimizer):
        return warmup_cosine(optimizer, max_epochs=4, steps_per_epoch=1, warmup_steps=2)

    resumable(before).run([0], max_epochs=1)
    with pytest.raises(PipelineError, match="written with another learning-rate schedule"):
        resumable(now).run([0], max_epochs=2)
    (tmp_path / "resume.pt").unlink()
    resumable(now).run([0], max_epochs=1)
    resumable(now).run([0], max_epochs=2)  # the same schedule resumes
