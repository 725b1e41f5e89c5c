"""docker/Dockerfile: lint-clean, pinned to an official PyTorch CUDA image, installing the repo's own pyproject.

No Docker engine runs here, so the image is checked at the level that decides whether it builds and behaves:
hadolint (with its built-in ShellCheck on the RUN lines), the parsed instructions, and the dependency spec.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.docker.docker_files import (
    DOCKER,
    REPO,
    copy_sources,
    instructions,
    parse_dockerfile,
    pip_install_commands,
    venv_tool,
)

BASE_IMAGE = re.compile(r"pytorch/pytorch:(?P<torch>\d+\.\d+\.\d+)-cuda(?P<cuda>\d+\.\d+)-cudnn9-runtime")
# The pytorch/pytorch 2.14 images are Ubuntu 24.04 with its system python: 3.12.
BASE_IMAGE_PYTHON = "3.12"


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def base_torch(dockerfile) -> str:
    match = BASE_IMAGE.fullmatch(dockerfile.baseimage)
    assert match, f"base image {dockerfile.baseimage!r} is not a pinned pytorch/pytorch CUDA cudnn9 runtime tag"
    return match["torch"]


def test_hadolint_reports_nothing():
    result = subprocess.run(
        [venv_tool("hadolint"), "--format", "json", str(DOCKER / "Dockerfile")], capture_output=True, text=True
    )
    findings = json.loads(result.stdout)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0


def test_entrypoint_passes_shellcheck():
    result = subprocess.run([venv_tool("shellcheck"), str(DOCKER / "entrypoint.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_base_image_torch_is_the_makefile_pin(base_torch):
    # The README's `make setup` pins torch; the image must run the same torch, only built for CUDA.
    pin = re.search(r"torch==(\S+)", (REPO / "Makefile").read_text())
    assert pin, "Makefile no longer pins torch: update this test and the base image together"
    assert base_torch == pin[1]


def _torch_requirements(pyproject: dict) -> list[tuple[str, Requirement]]:
    """Every requirement on torch in the installed closure of pyproject's dependencies, with who asks for it."""
    found, seen = [], set()
    pending = [("pyproject.toml", Requirement(spec)) for spec in pyproject["project"]["dependencies"]]
    while pending:
        owner, requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "torch":
            found.append((owner, requirement))
        if name in seen:
            continue
        seen.add(name)
        distribution = metadata.distribution(name)
        pending += [(distribution.metadata["Name"], Requirement(spec)) for spec in distribution.requires or []]
    return found


def test_base_image_torch_satisfies_every_torch_requirement(pyproject, base_torch):
    # pip keeps an installed torch only if it satisfies every requirement on torch in the resolved set;
    # one unmet bound (monai 1.6 asks for torch>=2.8) and pip would swap the CUDA torch for a registry wheel.
    requirements = _torch_requirements(pyproject)
    assert any(owner == "pyproject.toml" for owner, _ in requirements)
    unmet = [
        f"{owner}: {req}" for owner, req in requirements if not req.specifier.contains(base_torch, prereleases=True)
    ]
    assert not unmet, f"base image torch {base_torch} does not satisfy: {unmet}"


def test_base_image_python_satisfies_the_install(pyproject):
    assert SpecifierSet(pyproject["project"]["requires-python"]).contains(BASE_IMAGE_PYTHON)
    for spec in pyproject["project"]["dependencies"]:
        requires_python = metadata.distribution(Requirement(spec).name).metadata["Requires-Python"]
        if requires_python:
            assert SpecifierSet(requires_python).contains(BASE_IMAGE_PYTHON), f"{spec} needs python {requires_python}"


def test_installs_the_repo_pyproject_and_nothing_else(dockerfile):
    commands = pip_install_commands(dockerfile)
    assert commands, "the Dockerfile no longer runs pip install"
    for words in commands:
        positional = [word for word in words if not word.startswith("-")]
        options = [word for word in words if word.startswith("-")]
        assert positional == ["."], f"pip install {' '.join(words)}: the image must install only the repo (.)"
        assert set(options) <= {"--no-cache-dir"}, f"pip install {' '.join(words)}: unexpected options {options}"


def test_repo_has_no_second_requirements_list():
    lists = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in ("runs", "build")]
        lists += [
            Path(folder, name).relative_to(REPO)
            for name in files
            if fnmatch(name, "requirements*.txt") or fnmatch(name, "constraints*.txt")
        ]
    assert not lists, f"the dependency spec is pyproject.toml alone; found {lists}"


def test_copies_what_pip_install_reads_and_nothing_ignored(dockerfile, pyproject):
    sources = copy_sources(dockerfile)
    for needed in ("pyproject.toml", pyproject["project"]["readme"], "pipeline/"):
        assert needed in sources, f"{needed} must be copied before pip install ."
    # git keeps no empty folder: one here would be missing from a fresh clone and fail the build.
    missing = [
        source
        for source in sources
        if not (REPO / source).is_file() and not any(path.is_file() for path in (REPO / source).rglob("*"))
    ]
    assert not missing, f"COPY sources absent (or empty folders) in the repository: {missing}"
    allowed = {
        line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    excluded = [source for source in sources if source.rstrip("/") not in allowed]
    assert not excluded, f".dockerignore keeps these COPY sources out of the build context: {excluded}"


def test_runs_as_a_numeric_non_root_user(dockerfile):
    users = instructions(dockerfile, "USER")
    assert users, "no USER: the container would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} must be a numeric non-root uid"


def test_declares_workdir_volumes_healthcheck_and_entrypoint(dockerfile):
    assert instructions(dockerfile, "WORKDIR")
    volumes = set(json.loads(instructions(dockerfile, "VOLUME")[-1]))
    assert {"/data", "/output"} <= volumes
    (healthcheck,) = instructions(dockerfile, "HEALTHCHECK")
    assert "CMD" in healthcheck and not healthcheck.strip().upper().startswith("NONE")
    entrypoint = json.loads(instructions(dockerfile, "ENTRYPOINT")[-1])
    copied_to = {
        value.split()[-1].rsplit("/", 1)[-1]
        for value in instructions(dockerfile, "COPY")
        if "docker/entrypoint.sh" in value
    }
    assert entrypoint[0] in copied_to, f"ENTRYPOINT {entrypoint} is not the copied docker/entrypoint.sh"

