"""The ``python -m pipeline run`` command line for a bundle, as the demo and the sweep both run it.

That command runs ``monai.bundle run`` in process, with the same arguments, and turns a bad input anywhere in the
bundle into one line, so the demo's console and each sweep run's log end with the reason instead of a long stack
trace. Configs are given as the list literal ``--config_file "['train.json','evaluate.json']"`` that MONAI
(through fire) parses; dict and list overrides are passed as JSON so fire reads them back as the same values.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def bundle_command(configs: str | Path, names: list[str], **overrides) -> list[str]:
    """``[python, -m, pipeline, run, --config_file, [...], --key, value, ...]`` for ``configs/<name>`` files."""
    files = "[" + ",".join(f"'{Path(configs) / name}'" for name in names) + "]"
    command = [sys.executable, "-m", "pipeline", "run", "--config_file", files]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return command
