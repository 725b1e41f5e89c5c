"""The Dockerfile's install, rehearsed in a fresh virtualenv: proves the one dependency spec installs and runs.

The image is "a python with torch already installed, then ``pip install .`` of the repo". This test builds the
same thing without Docker and without the registry, which CI can afford on 2 cores:

* the base layer is this interpreter's site-packages (the README's install), exposed to a brand-new venv through
  a ``.pth`` line, standing in for the base image's preinstalled CUDA torch;
* the build context is a copy of exactly the paths the Dockerfile COPYs before its ``pip install``;
* the install runs the Dockerfile's own ``pip install`` arguments plus ``--no-index --no-build-isolation``, so
  pip must find every dependency already satisfied by the layer and must not replace torch;
* the result is a non-editable install: ``python -m pipeline --help`` runs from outside the repository and
  every module of the source tree is in the installed copy.

What it cannot show is that the registry serves the spec on the day the image is built; the Dockerfile's
build-time check (torch unchanged, ``pipeline --help`` runs) covers that when ``docker build`` runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.docker.docker_files import REPO, copy_sources, parse_dockerfile, pip_install_commands

PROBE = "import json, pipeline, torch; print(json.dumps([pipeline.__file__, torch.__file__, torch.__version__]))"


@pytest.mark.slow
def test_dockerfile_install_works_in_a_fresh_venv_over_a_preinstalled_torch(tmp_path: Path):
    context = tmp_path / "context"
    for source in copy_sources(parse_dockerfile(), before_install=True):
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which the repository lacks"
        target = context / source
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / source, target)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    base_layer = Path(sysconfig.get_paths()["purelib"])
    (fresh_site / "base_layer.pth").write_text(f"{base_layer}\n")

    (pip_args,) = pip_install_commands(parse_dockerfile())
    install = subprocess.run(
        [python, "-m", "pip", "install", *pip_args, "--no-index", "--no-build-isolation", "--quiet"],
        cwd=context, capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    cli = subprocess.run([python, "-m", "pipeline", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0 and "usage: python -m pipeline" in cli.stdout, cli.stderr[-3000:]

    pipeline_file, torch_file, torch_version = json.loads(
        subprocess.run([python, "-c", PROBE], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    )
    import torch

    assert Path(pipeline_file).is_relative_to(fresh_site), "pipeline must come from the fresh install, not the repo"
    assert Path(torch_file).is_relative_to(base_layer) and torch_version == torch.__version__, "torch was reinstalled"
    assert not (fresh_site / "torch").exists()

    source_modules = {path.relative_to(context) for path in (context / "pipeline").rglob("*.py")}
    installed_modules = {path.relative_to(fresh_site) for path in (fresh_site / "pipeline").rglob("*.py")}
    assert source_modules == installed_modules, f"not in the installed package: {source_modules - installed_modules}"
