"""Helpers for the container tests: the repository paths and the parsed Dockerfile's instructions."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def venv_tool(name: str) -> str:
    """Path of a console script installed beside the running interpreter (the test extra's linters)."""
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        pytest.fail(f"{name} is missing beside {sys.executable}: install the test extra (pip install -e '.[test]')")
    return str(tool)


def parse_dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKER / "Dockerfile"))


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parser.structure if item["instruction"] == name]


def copy_sources(parser: DockerfileParser, before_install: bool = False) -> list[str]:
    """The build-context paths of every COPY (flags and destination dropped).

    ``before_install`` stops at the first RUN that pip-installs: what the install itself can see.
    """
    sources = []
    for item in parser.structure:
        if before_install and item["instruction"] == "RUN" and _pip_installs(item["value"]):
            return sources
        if item["instruction"] == "COPY":
            words = [word for word in shlex.split(item["value"]) if not word.startswith("--")]
            sources.extend(words[:-1])
    if before_install:
        pytest.fail("the Dockerfile has no RUN pip install")
    return sources


def _pip_installs(run: str) -> list[list[str]]:
    """The words after ``pip install`` in one RUN value, one list per install command."""
    commands = []
    for command in run.split("&&"):
        words = shlex.split(command)
        for index in range(len(words) - 1):
            if re.fullmatch(r"(.*/)?pip3?(\.\d+)?", words[index]) and words[index + 1] == "install":
                commands.append(words[index + 2 :])
    return commands


def pip_install_commands(parser: DockerfileParser) -> list[list[str]]:
    """The words after ``pip install`` in every RUN, one list per install command."""
    return [command for value in instructions(parser, "RUN") for command in _pip_installs(value)]
