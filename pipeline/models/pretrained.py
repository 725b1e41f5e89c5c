"""Load pretrained weights with one clear error instead of a torch stack trace.

Weights files are the part of a backbone users supply by hand, so the usual failures are theirs to fix: a wrong
path, a download that stopped half way, or the checkpoint of a different model size (``sam_vit_l`` weights given
to ``sam_vit_b``). Each gets a :class:`~pipeline.errors.PipelineError` naming the file and what did not match.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from pipeline.errors import PipelineError

_SHOWN = 5


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path, unwrap: tuple[str, ...] = ("state_dict", "model")) -> dict[str, torch.Tensor]:
    """The tensors stored in ``path``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is unwrapped.

    Loaded with ``weights_only=True``: a weights file has no business running code on load.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"checkpoint {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise PipelineError(
            f"checkpoint {path} could not be read ({type(error).__name__}: {error}); "
            f"the file may be truncated or not a PyTorch weights file ({path.stat().st_size} bytes)"
        ) from error
    for key in unwrap:
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise PipelineError(f"checkpoint {path} does not hold a state dict of tensors (got {type(loaded).__name__})")
    return dict(loaded)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > _SHOWN else shown


def load_into(
    module: torch.nn.Module,
    path: str | Path,
    architecture: str,
    rename: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ignore_unexpected: Callable[[str], bool] | None = None,
) -> None:
    """Load the weights at ``path`` into ``module``, every key accounted for.

    ``rename`` maps the file's key layout onto the module's; ``ignore_unexpected`` names file keys that are
    expected to have no place in the module (e.g. a self-supervised checkpoint's pretext heads). Missing keys,
    other unexpected keys and shape mismatches are all reported in one error that names ``architecture``.
    """
    state = read_state_dict(path)
    if rename is not None:
        state = rename(state)
    own = module.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [
        key for key in state if key not in own and not (ignore_unexpected is not None and ignore_unexpected(key))
    ]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches (file vs model): {_listing(mismatched)}")
    if problems:
        raise PipelineError(f"checkpoint {path} does not fit {architecture}: " + "; ".join(problems))
    module.load_state_dict({key: state[key] for key in own}, strict=True)
