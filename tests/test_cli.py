"""``python -m pipeline``: the command registry and the one-line error contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "litemedsam_dka_polyp"


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
    assert "kernel_large=51" in dka and "init='zero'" in dka and "placement='parallel'" in dka


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


def test_run_hands_its_words_over_in_order(monkeypatch):
    seen = {}
    module = cli._module("pipeline.engine.commands.run")
    monkeypatch.setattr(module, "run", lambda args: seen.setdefault("argv", args.argv) and 0)
    words = ["--config_file", "['a.json']", "--dataset_dir", "d", "--max_epochs", "3", "--debug"]
    assert cli.main(["run", *words]) == 0
    assert seen["argv"] == words


def test_run_finds_the_pipeline_error_inside_monais_wrappers(monkeypatch, capsys):
    """MONAI raises ``RuntimeError("Failed to instantiate ...") from`` the component's error: one line remains."""
    import monai.bundle.scripts

    from pipeline.errors import PipelineError

    def failing_bundle(**kwargs):
        try:
            raise PipelineError("adapter checkpoint runs/x/models/model.pt cannot be read")
        except PipelineError as error:
            raise RuntimeError("Failed to instantiate component 'build_network'") from error

    monkeypatch.setattr(monai.bundle.scripts, "run", failing_bundle)
    assert cli.main(["run", str(BUNDLE), "train", "evaluate", "--dataset_dir", "d"]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: adapter checkpoint runs/x/models/model.pt cannot be read\n"
    assert cli.main(["run", str(BUNDLE), "train", "evaluate", "--debug"]) == cli.EXIT_BAD_INPUT
    debug = capsys.readouterr().err
    assert debug.startswith("Traceback") and "Failed to instantiate component 'build_network'" in debug
    assert debug.endswith("error: adapter checkpoint runs/x/models/model.pt cannot be read\n"), "trace, then verdict"


def test_run_names_a_missing_config():
    result = run("run", str(BUNDLE), "evaluat")
    assert result.returncode == cli.EXIT_BAD_INPUT
    assert result.stderr == f"error: config 'evaluat' not found: {BUNDLE / 'configs' / 'evaluat.json'} does not exist\n"


def test_known_library_notices_are_quiet_and_other_warnings_are_not():
    script = (
        "import logging, warnings, sys\n"
        "from pipeline import cli\n"
        "cli.quiet_known_notices() if len(sys.argv) == 1 else None\n"
        "warnings.warn('Importing from timm.models.layers is deprecated', FutureWarning)\n"
        "warnings.warn('inverse has been called but no invertible transforms have been supplied')\n"
        "warnings.warn('NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register successfully.')\n"
        "logging.getLogger('monai.data.nvimgcodec_pydicom_plugin').warning('nvImageCodec is not available')\n"
        "warnings.warn('a warning of ours')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stderr
    loud = subprocess.run([sys.executable, "-c", script, "loud"], capture_output=True, text=True, check=True).stderr
    assert "a warning of ours" in quiet and not any(text in quiet for text in ("timm", "inverse", "nvImage"))
    assert all(text in loud for text in ("timm", "inverse", "nvImageCodec", "NvImgCodec", "a warning of ours"))


def test_verbose_is_taken_off_the_line_and_passed_on(monkeypatch):
    monkeypatch.delenv("PIPELINE_VERBOSE", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["methods", "--verbose", "--help"])
    assert os.environ.pop("PIPELINE_VERBOSE") == "1"


def test_predict_finds_the_bundle_its_checkpoint_names_and_runs_its_inference_config(monkeypatch, tmp_path, capsys):
    """``predict`` is the bundle's train.json + inference.json through ``run``, with the model and folders as
    overrides; a checkpoint that does not name its bundle (older ones) asks for ``--bundle`` in one line."""
    import torch

    from pipeline.engine.commands import predict
    from pipeline.peft import apply_peft, save_adapter
    from tests.peft.backbones import SamViT

    model = SamViT()
    apply_peft(model, "bitfit")
    old = save_adapter(model, tmp_path / "old.pt")
    named = save_adapter(model, tmp_path / "model.pt", settings={"bundle_name": "litemedsam_dka_polyp"})
    assert cli.main(["predict", "-m", str(tmp_path / "gone.pt"), "-i", "x", "-o", "y"]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: model {tmp_path / 'gone.pt'} does not exist (-m/--model)\n"
    assert cli.main(["predict", "-m", str(old), "-i", "x", "-o", "y"]) == cli.EXIT_BAD_INPUT
    assert "does not name the bundle it was trained with (an older checkpoint): pass --bundle" in (
        capsys.readouterr().err)
    seen = []
    monkeypatch.setattr("pipeline.engine.commands.run.run", lambda args: seen.append(args.argv) or 0)
    assert cli.main(["predict", "-m", str(named), "-i", "in.jpg", "-o", "out", "--box", "1,2,3,4"]) == 0
    configs = predict.BUNDLES / "litemedsam_dka_polyp" / "configs"
    assert seen == [[str(configs / "train.json"), "inference", "--input", "in.jpg", "--network_def#adapter",
                     str(named), "--output_dir", "out", "--prediction_dir", "out", "--box", "1,2,3,4"]]
    assert cli.main(["predict", "-m", str(named), "-i", "hip.nii.gz", "-o", "out", "--box", "1,2,3,4,5,6",
                     "--box_class", "posterior"]) == 0
    assert seen[-1][-4:] == ["--box", "1,2,3,4,5,6", "--box_class", "posterior"]
    seen.pop()
    assert torch.load(named, weights_only=True)["settings"] == {"bundle_name": "litemedsam_dka_polyp"}
    free = save_adapter(model, tmp_path / "free.pt", settings={"bundle_name": "sam_slices_dka", "prompt": "none"})
    assert cli.main(["predict", "-m", str(free), "-i", "ct", "-o", "out", "--box", "1,2,3,4"]) == cli.EXIT_BAD_INPUT
    assert f"error: {free} is not box-prompted (prompt 'none'): drop --box" in capsys.readouterr().err
    assert len(seen) == 1
