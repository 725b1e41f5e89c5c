"""``python -m pipeline``: the command registry and the one-line error contract."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline import cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_every_registered_command_module_has_the_command_interface():
    for name, (module_name, _) in cli.COMMANDS.items():
        module = cli._module(module_name)
        assert callable(module.add_arguments) and callable(module.run), name


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
