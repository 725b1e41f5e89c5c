"""Every command the project prints pastes into a shell: bash reads back exactly the argument list that ran."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

from pipeline.engine.bundle_run import bundle_command


def test_a_printed_bundle_command_round_trips_through_bash(tmp_path):
    command = bundle_command(tmp_path / "my configs", ["train.json", "evaluate.json"], method="dka",
                             method_options={"init": "zero", "kernel_size": 31}, output_dir=tmp_path / "run's dir")
    printed = shlex.join(command)
    # the printed line, run by bash, with the program swapped for one that echoes the arguments it received
    echo = shlex.join([sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"])
    pasted = printed.replace(shlex.quote(sys.executable) + " -m pipeline", echo, 1)
    assert pasted != printed
    result = subprocess.run(["bash", "-c", pasted], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == command[3:]
    assert "--config_file" in command and "['" in command[command.index("--config_file") + 1]
