"""Running a bundle from Python: the command line the demo, the sweep and the bundle tests run, and the same run in
this process.

:func:`bundle_command` gives ``python -m pipeline run`` (or, with ``runner="monai.bundle"``, MONAI's own
``python -m monai.bundle run``) with the config list and overrides. ``python -m pipeline run`` runs
``monai.bundle run`` in process, with the same arguments, and turns a bad input anywhere in the bundle into one line,
so the demo's console and each sweep run's log end with the reason instead of a long stack trace. Configs are given
as the list literal ``--config_file "['train.json','evaluate.json']"`` that MONAI (through fire) parses; dict and
list overrides are passed as JSON so fire reads them back as the same values.

:func:`run_bundle` is that ``monai.bundle run`` in the calling process (``python -m pipeline run`` ends in it), which
saves a new interpreter's imports where a caller runs many bundles.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bundle_command(configs: str | Path, names: list[str | Path], runner: str = "pipeline", **overrides) -> list[str]:
    """``[python, -m, <runner>, run, --config_file, [...], --key, value, ...]`` for ``configs/<name>`` files (an
    absolute name is used as it is)."""
    files = "[" + ",".join(f"'{Path(configs) / name}'" for name in names) + "]"
    command = [sys.executable, "-m", runner, "run", "--config_file", files]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return command


def run_bundle(files: list[str | Path], **overrides) -> None:
    """``monai.bundle run`` of the config ``files`` (later ones override earlier ones) in this process, with the
    ``overrides`` as its ``--key value`` arguments (paths given as strings)."""
    from monai.bundle.scripts import run

    run(config_file=[str(f) for f in files],
        **{key: str(value) if isinstance(value, Path) else value for key, value in overrides.items()})
