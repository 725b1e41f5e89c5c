"""``python -m pipeline run BUNDLE [CONFIG ...] [--key value ...]``: a bundle run whose bad input is one line.

It runs ``monai.bundle.scripts.run`` in this process, exactly as ``python -m monai.bundle run --config_file [...]``
does (the same configs, the same ``--key value`` overrides, read the way that command's ``fire`` reads them), with
these differences:

* an override the configs do not define (``--max_epoch`` for ``--max_epochs``) stops before anything runs, with
  the closest key as a suggestion: MONAI would quietly add it as a new, unused key;
* evaluate and inference configs take the settings the adapter checkpoint was trained with (backbone, its
  weights, image size, prompt, classes, ...; :mod:`pipeline.engine.model_card`) for every one the line leaves out,
  so ``--output_dir RUN`` and the input are enough;
* a :class:`~pipeline.errors.PipelineError` raised anywhere, also deep inside a component MONAI instantiates (a
  corrupt adapter checkpoint, a split naming a missing image), ends the run with its one line ``error: ...`` on
  stderr and status :data:`pipeline.cli.EXIT_BAD_INPUT`, instead of MONAI's 60-135-line chained stack trace.
  ``--debug`` (or ``PIPELINE_DEBUG=1``) prints the full trace before that line. Python warnings (library
  deprecations and the like) go to stdout as one line each, with the log, so stderr holds only that verdict.

``BUNDLE`` is a bundle folder (its ``configs/`` are used; the ``CONFIG`` names default to ``train``) or a config
file; ``CONFIG`` names such as ``evaluate`` are found next to it, and paths work too:
``python -m pipeline run bundles/litemedsam_dka_polyp train evaluate --dataset_dir DIR``. MONAI's own
``--config_file "['train.json','evaluate.json']"`` works as well, so any ``monai.bundle run`` line can be
prefixed with ``python -m pipeline run`` instead.
"""

from __future__ import annotations

import argparse
import difflib
import os
import traceback
import warnings
from pathlib import Path

from pipeline.errors import PipelineError

# Arguments of ``monai.bundle.scripts.run`` itself: not config keys.
RUN_ARGUMENTS = ("run_id", "init_id", "final_id", "meta_file", "logging_file", "tracking", "args_file")
FORWARDS_ARGUMENTS = True  # ``pipeline.cli`` hands over the words after ``run`` as they are, in ``args.argv``


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The usage ``--help`` shows; the words themselves are read by :func:`read_words`."""
    parser.add_argument("bundle", nargs="?", help="a bundle folder (uses its configs/) or a config file")
    parser.add_argument("configs", nargs="*", metavar="CONFIG",
                        help="more configs: names such as 'evaluate' next to the first (default: train), or paths")
    parser.add_argument("--config_file", help="instead of BUNDLE CONFIG...: the list python -m monai.bundle run takes")
    parser.add_argument("--debug", action="store_true",
                        help="print the full stack trace of an error (also PIPELINE_DEBUG=1)")
    parser.epilog = "Then the bundle's overrides, --key value, as for python -m monai.bundle run."


def config_files(bundle: str, names: list[str]) -> list[Path]:
    """The config files ``BUNDLE [CONFIG ...]`` name, each checked to exist."""
    root = Path(bundle)
    if root.is_dir():
        folder = root / "configs" if (root / "configs").is_dir() else root
        names = names or ["train"]
        files = []
    elif root.is_file():
        folder, files = root.parent, [root]
    else:
        raise PipelineError(f"bundle {root} is neither a bundle folder nor a config file")
    for name in names:
        given = Path(name)
        if not given.is_file():
            given = folder / (name if name.endswith((".json", ".yaml", ".yml")) else f"{name}.json")
        if not given.is_file():
            raise PipelineError(f"config {name!r} not found: {given} does not exist")
        files.append(given)
    return files


def read_words(words: list[str]) -> tuple[list[Path], dict, bool]:
    """``[BUNDLE [CONFIG ...]] [--config_file FILES] [--key value | --key=value | --flag ...]`` as (config files,
    overrides, debug). Values are read as ``python -m monai.bundle run`` (fire) reads them: ``3`` is a number,
    ``"{'r': 8}"`` a dict, ``abc`` a string."""
    from fire.parser import DefaultParseValue

    names, overrides, debug, index = [], {}, False, 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--debug":
            debug = True
        elif word.startswith("--") and len(word) > 2:
            key, has_value, value = word[2:].partition("=")
            if not has_value:
                if index < len(words) and not words[index].startswith("--"):
                    value, index = words[index], index + 1
                else:
                    value = "True"  # a bare flag, as fire reads it
            overrides[key] = DefaultParseValue(value)
        elif overrides:
            raise PipelineError(f"{word!r} follows the overrides: name the bundle and configs before any --key value")
        else:
            names.append(word)
    listed = overrides.pop("config_file", None)
    if listed is not None and names:
        raise PipelineError("give either BUNDLE [CONFIG ...] or --config_file, not both")
    if listed is not None:
        files = [Path(f) for f in ([listed] if isinstance(listed, str) else listed)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise PipelineError(f"config file {missing[0]} does not exist (--config_file)")
    elif names:
        files = config_files(names[0], names[1:])
    else:
        raise PipelineError("name a bundle folder or config file (or --config_file) to run")
    return files, overrides, debug


def _read_configs(files: list[Path]) -> tuple[object, str]:
    from monai.bundle import ConfigParser

    parser, source = ConfigParser(), ", ".join(str(f) for f in files)
    try:
        parser.read_config([str(f) for f in files])
    except (KeyError, ValueError) as error:  # MONAI's reader: an override of an id no earlier config defines
        raise PipelineError(f"configs {source} cannot be read together ({error}); an override config such as "
                            "evaluate.json goes after train.json: BUNDLE train evaluate") from None
    return parser, source


def check_override_keys(files: list[Path], overrides: dict) -> None:
    """Refuse an override id the configs do not define, suggesting the closest one they do."""
    parser, source = _read_configs(files)
    for key in overrides:
        if key in RUN_ARGUMENTS or key in parser:
            continue
        parent, _, leaf = key.rpartition("#")
        siblings = parser[parent] if parent and parent in parser else parser.get()
        candidates = [str(k) for k in siblings] if isinstance(siblings, dict) else []
        close = difflib.get_close_matches(leaf, candidates, n=1)
        hint = f"; did you mean --{parent + '#' if parent else ''}{close[0]}?" if close else ""
        raise PipelineError(f"unknown override --{key}: {source} defines no such key{hint}")


def pipeline_error_in(error: BaseException | None) -> PipelineError | None:
    """The :class:`PipelineError` in ``error``'s chain of causes (MONAI wraps it in ``RuntimeError``s), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PipelineError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one line on stdout, with the run's log, leaving stderr to the verdict."""
    first = (str(message).strip().splitlines() or [""])[0]
    print(f"warning: {category.__name__}: {first} ({filename}:{lineno})", flush=True)


def run(args: argparse.Namespace) -> int:
    files, overrides, debug = read_words(args.argv)
    debug = debug or os.environ.get("PIPELINE_DEBUG", "") not in ("", "0")
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _warning_to_log
        # MONAI warns on every run that a config file is code; here the user named the files on this command line.
        warnings.filterwarnings("ignore", message="parsing config_file")
        check_override_keys(files, overrides)
        from pipeline.engine.bundle_run import run_bundle
        from pipeline.engine.model_card import adopt_settings

        try:
            run_bundle(files, **adopt_settings(_read_configs(files)[0], overrides))
        except Exception as error:
            cause = pipeline_error_in(error)
            if cause is None:
                raise
            if debug:
                traceback.print_exc()  # the whole trace first; the one-line verdict still ends the output
            raise PipelineError(str(cause)) from None
    return 0
