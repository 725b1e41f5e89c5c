"""Write a training run's last state as an adapter checkpoint, beside the best-validation one the bundle keeps.

A bundle saves ``models/model.pt`` at its best validation round, which on a few-shot budget can be step 12 of 120;
what the rest of the budget did to the adapters is only in ``models/resume.pt``. This puts that state's trainable
tensors into ``model.pt``'s layout (method, options, settings), so anything that reads an adapter checkpoint --
``python -m pipeline erf --adapter``, a bundle's evaluation -- can measure the run as it ended:

    python tools/last_state.py runs/kvasir_study/runs/dka/split_k5_s0 -o dka_last.pt

The tensors must match ``model.pt``'s name for name, so a resume state of another run is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.engine.handlers import read_resume_state  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.peft.checkpoint import atomic_save, read_adapter  # noqa: E402


def last_state(run: Path, output: Path) -> int:
    """Write ``run``'s last trained state to ``output``; returns the epoch it ended."""
    if output.exists():
        raise PipelineError(f"{output} exists; it is not overwritten")
    payload = read_adapter(run / "models" / "model.pt")
    state = read_resume_state(run / "models" / "resume.pt")
    if set(state["network"]) != set(payload["state_dict"]):
        raise PipelineError(f"{run / 'models' / 'resume.pt'} holds other tensors than {run / 'models' / 'model.pt'}")
    atomic_save({**payload, "state_dict": state["network"]}, output)
    return int(state["epoch"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a bundle run's output folder (holding models/)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the adapter checkpoint to write")
    args = parser.parse_args(argv)
    try:
        epoch = last_state(args.run, args.output)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.output}: {args.run}'s state after epoch {epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
