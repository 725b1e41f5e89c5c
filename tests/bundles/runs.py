"""How the bundle tests run a bundle: MONAI's own ``python -m monai.bundle run`` command line (the model-zoo way),
built by :func:`pipeline.engine.bundle_run.bundle_command`, in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from pipeline.engine.bundle_run import bundle_command

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "68719476736"}
"""glibc then reuses freed tensor memory instead of returning and re-faulting it page by page (the README's
test command sets the same)."""


def monai_command(configs: Path, *names: str | Path, **overrides) -> list[str]:
    """``python -m monai.bundle run --config_file [configs/<name>, ...] --key value ...``."""
    return bundle_command(configs, list(names), runner="monai.bundle", **overrides)


def run_command(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
