"""``tools/last_state.py``: a run's last state becomes an adapter checkpoint with the best one's metadata; nothing is
overwritten and another run's state is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.peft.checkpoint import FORMAT, read_adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import last_state  # noqa: E402


@pytest.fixture
def run(tmp_path) -> Path:
    """A run folder with a best-round model.pt and a later resume.pt (plain tensors, as the bundles write them)."""
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    torch.save({"format": FORMAT, "backbone": "litemedsam", "method": "dka", "layers": "middle", "options": {},
                "state_dict": {"a": torch.zeros(2), "b": torch.zeros(3)}, "settings": {"prompt": "none"}},
               models / "model.pt")
    torch.save({"epoch": 32, "trainer": {}, "optimizer": {}, "rng": {},
                "network": {"a": torch.ones(2), "b": torch.full((3,), 2.0)}}, models / "resume.pt")
    return tmp_path / "run"


def test_the_last_state_keeps_the_metadata_and_takes_the_resume_tensors(run, tmp_path):
    assert last_state.main([str(run), "-o", str(tmp_path / "last.pt")]) == 0
    written = read_adapter(tmp_path / "last.pt")
    best = read_adapter(run / "models" / "model.pt")
    metadata = {k: v for k, v in best.items() if k != "state_dict"}
    assert {k: v for k, v in written.items() if k != "state_dict"} == metadata
    assert torch.equal(written["state_dict"]["a"], torch.ones(2))
    assert torch.equal(written["state_dict"]["b"], torch.full((3,), 2.0))


def test_nothing_is_overwritten_and_another_runs_state_is_refused(run, tmp_path, capsys):
    (tmp_path / "taken.pt").write_bytes(b"a user's file")
    assert last_state.main([str(run), "-o", str(tmp_path / "taken.pt")]) == 2
    assert (tmp_path / "taken.pt").read_bytes() == b"a user's file"
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'taken.pt'} exists; it is not overwritten"

    state = torch.load(run / "models" / "resume.pt", weights_only=True)
    torch.save({**state, "network": {"a": torch.ones(2)}}, run / "models" / "resume.pt")
    with pytest.raises(PipelineError, match="holds other tensors"):
        last_state.last_state(run, tmp_path / "other.pt")
