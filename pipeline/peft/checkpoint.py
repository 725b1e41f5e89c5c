"""Adapter-only checkpoints: the tensors that trained (KB to MB), never the frozen backbone.

A checkpoint carries the method, its options, the chosen blocks and the backbone's architecture name, so loading
onto a freshly built backbone can re-apply the method and refuse a checkpoint made for something else.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from pipeline.engine.distributed import unwrap
from pipeline.errors import PipelineError
from pipeline.peft.injector import apply_peft, peft_state_of
from pipeline.peft.methods import build_method

FORMAT = "pipeline-adapter/1"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters, plus the buffers of modules that own one (e.g. a trained BatchNorm's statistics)."""
    inner = unwrap(model)
    state = peft_state_of(inner)
    names = set(state.adapter) | set(state.head)
    tensors = {n: p for n, p in inner.named_parameters() if n in names and p.requires_grad}
    for module_name, module in inner.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if any(prefix + n in tensors for n, _ in module.named_parameters(recurse=False)):
            for buffer_name, buffer in module.named_buffers(recurse=False):
                if buffer_name not in module._non_persistent_buffers_set:
                    tensors[prefix + buffer_name] = buffer
    return {n: t.detach().cpu().clone() for n, t in sorted(tensors.items())}


def _user_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (``tempfile.mkstemp`` always makes 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """``write(stream)`` into a temporary file in the same folder, fsync, then rename: a crash never leaves half a
    file.

    The file gets the user's normal mode, not the temporary file's private 0600, so whoever may read the run
    folder (a group, a container running as another user) can read its checkpoints too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, _user_file_mode())
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` of ``obj`` to ``path`` through :func:`atomic_write`."""
    return atomic_write(path, lambda stream: torch.save(obj, stream))


def adapter_payload(model: nn.Module, settings: dict | None = None) -> dict:
    """What :func:`save_adapter` writes: format, method metadata, trainable tensors and, given, the ``settings`` that
    shape the network and its preprocessing (plain JSON values, so ``weights_only`` loading reads them)."""
    payload = {"format": FORMAT, **peft_state_of(model).describe(), "state_dict": trainable_state_dict(model)}
    if settings:
        payload["settings"] = json.loads(json.dumps(settings, default=str))
    return payload


def save_adapter(model: nn.Module, path: str | os.PathLike, settings: dict | None = None) -> Path:
    """Write the adapter-only checkpoint of ``model`` to ``path`` atomically, with the ``settings`` it was built
    with (a bundle's ``model_settings``; see :mod:`pipeline.engine.model_card`)."""
    return atomic_save(adapter_payload(model, settings), path)


def read_adapter(path: str | os.PathLike) -> dict:
    """Load and check an adapter checkpoint file; every failure names the file."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"adapter checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise PipelineError(f"adapter checkpoint {path} cannot be read ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PipelineError(f"{path} is not an adapter checkpoint of this project (expected format {FORMAT})")
    return payload


def load_adapter(model: nn.Module, path: str | os.PathLike, prefix: str = "") -> nn.Module:
    """Load an adapter checkpoint onto ``model``; a fresh backbone gets the checkpoint's method applied first.

    Refuses, with one message naming the file, a checkpoint made for another backbone, another method or other
    options, and one whose tensors do not match the model's trainable tensors name for name and shape for shape.
    With ``prefix``, only the tensors under it are compared and loaded (``"image_encoder."``: the encoder of an
    adapter trained with any head, as the ERF measurement needs).
    """
    payload = read_adapter(path)
    inner = unwrap(model)
    if getattr(inner, "peft_state", None) is None:
        spec_name = inner.peft_spec().name if hasattr(inner, "peft_spec") else None
        if spec_name is not None and spec_name != payload["backbone"]:
            raise PipelineError(f"{path} was made for backbone {payload['backbone']!r}, not {spec_name!r}")
        apply_peft(inner, payload["method"], layers=payload["layers"], **payload["options"])
    expected = peft_state_of(inner).describe()
    found = {key: payload[key] for key in expected}
    if found["method"] == expected["method"]:  # options as the method spells them now (old aliases such as "paper")
        found["options"] = build_method(found["method"], **found["options"]).options()
    for key in ("backbone", "method", "layers", "options"):
        if expected[key] != found[key]:
            raise PipelineError(f"{path} was made for {key} {found[key]!r}, but this model has {expected[key]!r}")
    own = {n: t for n, t in trainable_state_dict(inner).items() if n.startswith(prefix)}
    tensors = {n: t for n, t in payload["state_dict"].items() if n.startswith(prefix)}
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    reshaped = sorted(n for n in set(own) & set(tensors) if own[n].shape != tensors[n].shape)
    if missing or unexpected or reshaped:
        raise PipelineError(
            f"{path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {reshaped[:5]}"
        )
    inner.load_state_dict(tensors, strict=False)
    return model
