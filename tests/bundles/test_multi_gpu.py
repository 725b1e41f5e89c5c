"""``multi_gpu_train.json``: every bundle has one, and the real Swin bundle trains under torchrun with 2 CPU ranks.

The DDP run is the bundle itself (gloo, ``torchrun --standalone --nproc_per_node=2``) on 2 real training and 2
real validation volumes, at ``--feature_size 12``. A test-only override file adds two ``run`` steps that save each
rank's trainable tensors before and after training (rank-suffixed), so the test can compare the ranks' weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.bundles.runs import ENV, REPO
from tests.bundles.test_swin_bundle import CONFIGS as SWIN_CONFIGS
from tests.bundles.test_swin_bundle import hippocampus_split

BUNDLES = sorted(p.parent.parent for p in (REPO / "bundles").glob("*/configs/train.json"))
# Handlers that only log: under DDP they run on rank 0 alone (the rest must run everywhere, e.g. the
# ValidationHandler, whose all-gathered metric keeps early stopping in step across ranks).
LOGGING_TARGETS = {"StatsHandler", "TensorBoardStatsHandler", "pipeline.engine.tensorboard.LearningRateWriter",
                   "pipeline.engine.tensorboard.ValidationImages", "pipeline.engine.record.TrainingRecord",
                   "ignite.handlers.ProgressBar"}
RANK_HOOK = {
    "+imports": ["$from pipeline.peft import trainable_state_dict"],
    "run": [
        "$torch.save(trainable_state_dict(@network.module), @output_dir + f'/initial_rank{distributed.rank()}.pt')",
        "$@train#trainer.run()",
        "$torch.save(trainable_state_dict(@network.module), @output_dir + f'/final_rank{distributed.rank()}.pt')",
    ],
}


def merged(bundle: Path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "multi_gpu_train.json")])
    return parser


def test_rank_before_the_process_group_is_torchruns_rank(monkeypatch):
    """The ``_disabled_`` flags may resolve before ``init_distributed``: they must already see the right rank."""
    from pipeline.engine.distributed import is_main_process, rank

    monkeypatch.setenv("RANK", "1")
    assert rank() == 1 and not is_main_process()
    monkeypatch.delenv("RANK")
    assert rank() == 0 and is_main_process()


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_multi_gpu_config_leaves_logging_to_rank_zero_only(bundle):
    """Guards the index-based ``_disabled_`` overrides against a reordered handler list in ``train.json``."""
    assert (bundle / "configs" / "multi_gpu_train.json").is_file()
    parser = merged(bundle)
    for part in ("train", "validate"):
        handlers = parser[f"{part}#handlers"]
        for index, handler in enumerate(handlers):
            target = handler.get("_target_") if isinstance(handler, dict) else handler
            disabled = isinstance(handler, dict) and "_disabled_" in handler
            assert disabled == (target in LOGGING_TARGETS), f"{part}#handlers#{index} ({target})"
    assert "_disabled_" in parser["summary_writer"] and "_disabled_" in parser["save_split"]
    assert parser["device"]["_target_"] == "pipeline.engine.distributed.init_distributed"
    assert parser["network"]["_target_"] == "pipeline.engine.distributed.wrap_ddp"
    for part in ("train", "validate"):
        assert parser[f"{part}#dataloader#sampler"] == f"@{part}#sampler"
        assert parser[f"{part}#sampler#_requires_"] == "@device"


@pytest.mark.slow
@pytest.mark.real_data
def test_swin_bundle_trains_with_ddp_on_two_cpu_ranks(shared_data, tmp_path):
    root = shared_data / "msd_hippocampus"
    split = hippocampus_split(root, tmp_path, train=2, validation=2, test=0)
    hook = tmp_path / "rank_hook.json"
    hook.write_text(json.dumps(RANK_HOOK))
    output = tmp_path / "run"
    files = f"['{SWIN_CONFIGS / 'train.json'}','{SWIN_CONFIGS / 'multi_gpu_train.json'}','{hook}']"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "monai.bundle", "run", "--config_file", files, "--dataset_dir", str(root), "--split", str(split),
               "--output_dir", str(output), "--feature_size", "12", "--max_epochs", "1", "--val_interval", "1",
               # the paper init: with the default zero init a single step moves only each adapter's up-projection
               # (every other adapter weight sits behind it), and the check below needs every adapter weight to move
               "--method_options", json.dumps({"init": "paper"})]
    # CPU ranks: gloo, as on a machine without GPUs; one thread each, since the two ranks share the cores
    env = {**ENV, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    assert sorted(p.name for p in (output / "models").iterdir()) == ["model.json", "model.pt", "resume.pt"]
    assert len(list((output / "tensorboard").iterdir())) == 1, "one TensorBoard writer: rank 0's"
    assert log.count("train_loss:") == 1, "only rank 0 logs the iteration"

    initial = [torch.load(output / f"initial_rank{r}.pt") for r in (0, 1)]
    final = [torch.load(output / f"final_rank{r}.pt") for r in (0, 1)]
    saved = torch.load(output / "models" / "model.pt")["state_dict"]
    assert set(final[0]) == set(final[1]) == set(saved)
    for name in final[0]:
        assert torch.equal(final[0][name], final[1][name]), f"{name} differs between ranks"
        assert torch.equal(final[0][name], saved[name]), f"{name}: the checkpoint is not the trained weights"
    changed = [n for n in final[0] if not torch.equal(initial[0][n], final[0][n])]
    adapters = [n for n in final[0] if ".adapter." in n]
    assert adapters and set(adapters) <= set(changed), "the adapters trained, so equal ranks is not just equal init"
