"""``python -m pipeline``: the command registry and the one-line error contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_builds_its_parser_and_prints_its_help(name, capsys):
    """Imports the command's module and runs its ``add_arguments``: a broken command fails here, not in the field."""
    with pytest.raises(SystemExit) as exit:
        cli.main([name, "--help"])
    assert exit.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: python -m pipeline {name}"), help_text[:200]
    assert cli.COMMANDS[name][1] in help_text, "the command's description heads its help"


def test_methods_command_prints_every_method_with_its_defaults(capsys):
    from pipeline.peft import METHODS

    assert cli.main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[::2]] == list(METHODS)
    dka = lines[2 * list(METHODS).index("dka") + 1]
    assert "kernel_large=51" in dka and "init='default'" in dka and "placement='parallel'" in dka


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0
    for name in cli.COMMANDS:
        assert name in result.stdout


def test_methods_lists_defaults_as_json():
    result = run("methods", "--json")
    assert result.returncode == 0, result.stderr
    defaults = json.loads(result.stdout)
    assert defaults["dka"]["kernel_large"] == 51 and defaults["dka"]["kernel_small"] == 5
    assert defaults["dka"]["placement"] == "parallel" and defaults["adapter"]["placement"] == "sequential"


def test_pipeline_error_is_one_line_without_traceback(monkeypatch, capsys):
    from pipeline.errors import PipelineError

    class Failing:
        @staticmethod
        def add_arguments(parser):
            pass

        @staticmethod
        def run(args):
            raise PipelineError("data/x.nii.gz: image and label shapes differ")

    monkeypatch.setitem(cli.COMMANDS, "fail", ("failing", "fails"))
    monkeypatch.setattr(cli, "_module", lambda name: Failing)
    assert cli.main(["fail"]) == 2
    assert capsys.readouterr().err == "error: data/x.nii.gz: image and label shapes differ\n"
