"""Compute what is frozen once: a content-keyed cache of the encoder's frozen prefix.

Under every adapter method the encoder blocks in front of the first adapter (patch embedding and the early stages;
the whole encoder under ``linear_probe``) have no trainable tensor, so their output is a pure function of the
encoder's input. Few-shot training feeds the same handful of images (and validation the same cases) through them
at every step and every round: 40-100 % of the encoder's work, repeated. This module runs that prefix once per
distinct input and reuses the result.

**Exact by construction.** An entry's key is a hash of the prefix's own tensors (so other weights, another method's
prefix, a loaded checkpoint or an in-place edit of a frozen tensor give other keys), the device type and autocast
state, the machine computing it (:func:`pipeline.machine.machine`: processor or GPU, CPU threads, torch version),
and the bytes of the encoder input itself (after the backbone's resizing and intensity scaling). Any change of
preprocessing, augmentation view or source file is therefore a different key; no case name or file path is trusted.
A training run with the cache gives the losses of the run without it (``tests/models/test_feature_cache.py``
checks this on real Kvasir-SEG images). The machine is in the key because the prefix's sums round differently on
other threads: a sweep on 1 thread that read features a 2-thread run had written trained another run than the same
sweep with its cache empty (Kvasir-SEG, 5-image probe: second step's loss 1.6988 against 1.0465).

**Where it stops.** The prefix ends at the first encoder step that owns a trainable tensor. In training mode a
prefix containing active dropout / stochastic depth is not a function of its input, so the cache then serves
evaluation only. Random augmentation (a new input every step) would only fill the cache: ``in_training=False``
keeps training on the plain path while evaluation stays cached.

**On disk.** With ``directory`` set, entries are also written there (safetensors, no pickle, atomic rename) with a
digest of their bytes; an entry that fails to read or to match its digest is recomputed and rewritten, never used.
A sweep points all its runs at one directory, so every run after the first reads the test set's features back.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from pipeline.errors import PipelineError
from pipeline.machine import machine
from pipeline.options import flag
from pipeline.peft.checkpoint import atomic_write

logger = logging.getLogger(__name__)

_GIB = 2**30


def _call_submodule(path: str, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.get_submodule(path)(x)


@dataclass(frozen=True)
class EncoderStep:
    """One step of an image encoder's forward: ``run(model, x)``, reading only the tensors under ``owns``.

    ``owns`` are module or parameter paths inside the model. They decide whether the step is frozen (no trainable
    tensor among them) and what the cache key hashes, so a step must list everything its ``run`` reads.
    """

    owns: tuple[str, ...]
    run: Callable[[nn.Module, torch.Tensor], torch.Tensor]

    @classmethod
    def module(cls, path: str) -> EncoderStep:
        """The step that calls the submodule at ``path`` on ``x``."""
        return cls((path,), lambda model, x: _call_submodule(path, model, x))


def _owned(model: nn.Module, step: EncoderStep) -> tuple[list[tuple[str, torch.Tensor]], list[nn.Module]]:
    """The named tensors and the modules under ``step.owns``."""
    tensors, modules = [], []
    for path in step.owns:
        try:
            module = model.get_submodule(path)
        except AttributeError:
            tensors.append((path, model.get_parameter(path)))
            continue
        modules.append(module)
        # parameters and persistent buffers: the state a checkpoint defines. Non-persistent buffers are derived
        # from it, and some modules rebuild them on every mode switch (TinyViT's attention-bias table is
        # re-registered at each train()/eval() call), which would otherwise split one input over several keys.
        tensors += [(f"{path}.{name}", t) for name, t in module.state_dict(keep_vars=True).items()]
    return tensors, modules


def _stochastic(module: nn.Module) -> bool:
    """Whether ``module`` draws random numbers in training mode (dropout, stochastic depth)."""
    return any(
        (isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0) or float(getattr(m, "drop_prob", 0) or 0) > 0
        for m in module.modules()
    )


def frozen_prefix(model: nn.Module, steps: Sequence[EncoderStep]) -> int:
    """How many leading ``steps`` own no trainable tensor (and, in training mode, draw no random numbers)."""
    count = 0
    for step in steps:
        tensors, modules = _owned(model, step)
        if any(t.requires_grad for _, t in tensors) or (model.training and any(map(_stochastic, modules))):
            break
        count += 1
    return count


def _dense_order(tensor: torch.Tensor) -> list[int]:
    """The dimension order in which ``tensor`` (dense, any strides) is laid out in memory, outermost first."""
    return sorted(range(tensor.dim()), key=lambda dim: (-tensor.stride(dim), dim))


def _hash_tensor(digest, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.cpu().contiguous().view(torch.uint8).numpy())


class FeatureCache:
    """Frozen-prefix outputs by content key: an LRU in memory (``memory_gb``), optionally mirrored on disk.

    ``enabled=False`` turns it off without changing the network; ``in_training=False`` uses it in evaluation mode
    only (see the module docstring). ``stats`` counts entries served from memory, from disk, and computed.
    """

    def __init__(self, enabled: bool = True, directory: str | os.PathLike | None = None, memory_gb: float = 2.0,
                 in_training: bool = True) -> None:
        if not isinstance(memory_gb, (int, float)) or memory_gb < 0:
            raise PipelineError(f"cache_memory_gb must be a number >= 0, got {memory_gb!r}")
        self.enabled = flag("cache", enabled)
        self.directory = Path(directory) if directory not in (None, "") else None
        self.max_bytes = int(memory_gb * _GIB)
        self.in_training = flag("in_training", in_training)
        self.stats: Counter[str] = Counter()
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._signatures: dict[tuple, str] = {}

    def applies(self, training: bool) -> bool:
        return self.enabled and (self.in_training or not training)

    # --- keys -------------------------------------------------------------------------------------------------
    def signature(self, model: nn.Module, steps: Sequence[EncoderStep]) -> str:
        """Hash of the prefix's tensors; memoised on their storage and in-place version, so edits invalidate it."""
        tensors = [t for step in steps for t in _owned(model, step)[0]]
        identity = (len(steps), *[(name, t.data_ptr(), t._version) for name, t in tensors])
        if identity not in self._signatures:
            digest = hashlib.blake2b(digest_size=20)
            for name, tensor in tensors:
                digest.update(name.encode())
                _hash_tensor(digest, tensor)
            if len(self._signatures) >= 8:  # in-place edits of frozen tensors make new identities: keep recent ones
                self._signatures.pop(next(iter(self._signatures)))
            self._signatures[identity] = digest.hexdigest()
        return self._signatures[identity]

    @staticmethod
    def context(signature: str, device: torch.device) -> str:
        """What a batch's keys share: the prefix, and where and how it computes (device, autocast, machine)."""
        autocast = torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type)
        return f"{signature}|{device.type}|{autocast}|{machine(device)}"

    @staticmethod
    def key(context: str, sample: torch.Tensor) -> str:
        digest = hashlib.blake2b(digest_size=20)
        digest.update(context.encode())
        _hash_tensor(digest, sample)
        return digest.hexdigest()

    # --- storage ----------------------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.safetensors"

    def _remember(self, key: str, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes:
            return
        self._memory[key] = value
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, evicted = self._memory.popitem(last=False)
            self._bytes -= evicted.numel() * evicted.element_size()

    def _read(self, key: str) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_safetensors(path.read_bytes())
            stored, order, digest = tensors["value"], tensors["order"], tensors["digest"]
            check = hashlib.blake2b(digest_size=20)
            _hash_tensor(check, stored)
            _hash_tensor(check, order)
            if bytes(digest.numpy()) != check.digest():
                raise ValueError("digest mismatch")
            return stored.permute(torch.argsort(order).tolist())
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as error:
            logger.warning(f"feature cache entry {path} is unreadable or corrupt ({error}); recomputing it")
            return None

    def _write(self, key: str, value: torch.Tensor) -> None:
        # stored in its memory order and permuted back on reading, so a read entry has the computed one's strides
        order = torch.tensor(_dense_order(value))
        stored = value.detach().cpu().permute(order.tolist()).contiguous()
        check = hashlib.blake2b(digest_size=20)
        _hash_tensor(check, stored)
        _hash_tensor(check, order)
        digest = torch.frombuffer(bytearray(check.digest()), dtype=torch.uint8)
        payload = save_safetensors({"value": stored, "order": order, "digest": digest})
        atomic_write(self._path(key), lambda stream: stream.write(payload))

    def lookup(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.stats["memory"] += 1
            return self._memory[key]
        if self.directory is not None:
            value = self._read(key)
            if value is not None:
                self.stats["disk"] += 1
                self._remember(key, value)
                return value
        return None

    def store(self, key: str, value: torch.Tensor) -> None:
        self.stats["computed"] += 1
        self._remember(key, value)
        if self.directory is not None:
            self._write(key, value)

    # --- running ----------------------------------------------------------------------------------------------
    def run(self, model: nn.Module, steps: Sequence[EncoderStep], x: torch.Tensor) -> torch.Tensor:
        """``steps`` applied to each sample of ``x``, computing only the samples not cached yet (as one batch).

        The batch is reassembled with the memory layout the steps produce (TinyViT's and SAM's token maps are
        channels-last-like views), so the steps after the prefix run the same kernels as without the cache.
        """
        signature = self.signature(model, steps)
        context = self.context(signature, x.device)
        keys = [self.key(context, sample) for sample in x]
        found = [self.lookup(key) for key in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            with torch.no_grad():
                computed = run_steps(model, steps, x[missing])
            for i, value in zip(missing, computed, strict=False):
                value = value.clone()  # own storage (same strides): a view would keep the whole batch alive
                self.store(keys[i], value)
                found[i] = value
        first = found[0]
        batch = torch.empty_strided((len(found), *first.shape), (first.numel(), *first.stride()),
                                    dtype=first.dtype, device=x.device)
        for row, value in zip(batch, found, strict=False):
            row.copy_(value)
        return batch

    def describe(self) -> str:
        where = f", on disk in {self.directory}" if self.directory is not None else ""
        return (f"frozen-prefix cache: {self.stats['memory']} from memory, {self.stats['disk']} read from disk, "
                f"{self.stats['computed']} computed{where}")


def run_steps(model: nn.Module, steps: Sequence[EncoderStep], x: torch.Tensor) -> torch.Tensor:
    for step in steps:
        x = step.run(model, x)
    return x


def run_encoder(model: nn.Module, steps: Sequence[EncoderStep], x: torch.Tensor,
                cache: FeatureCache | None = None) -> torch.Tensor:
    """The encoder's output for ``x``: its frozen prefix through ``cache`` (when it applies), the rest as usual."""
    start = 0
    if cache is not None and cache.applies(model.training):
        start = frozen_prefix(model, steps)
        if start:
            x = cache.run(model, steps[:start], x)
    return run_steps(model, steps[start:], x)
