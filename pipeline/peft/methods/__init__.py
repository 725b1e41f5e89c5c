"""The registry of PEFT methods: a plain dict from name to the method's options dataclass."""

from __future__ import annotations

from pipeline.errors import PipelineError
from pipeline.peft.methods.adapter import Adapter
from pipeline.peft.methods.adaptformer import AdaptFormer
from pipeline.peft.methods.base import BlockAdapterMethod, BottleneckMethod, Method
from pipeline.peft.methods.bitfit import BitFit
from pipeline.peft.methods.convpass import Convpass
from pipeline.peft.methods.dka import DKA
from pipeline.peft.methods.full import Full
from pipeline.peft.methods.linear_probe import LinearProbe
from pipeline.peft.methods.lka import LKA
from pipeline.peft.methods.lora import LoRA
from pipeline.peft.methods.telescopic import Telescopic

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (DKA, LKA, Adapter, AdaptFormer, Convpass, LoRA, BitFit, Telescopic, LinearProbe, Full)
}


def build_method(method: str, placement: str | None = None, **options) -> Method:
    """The validated options object for ``method``; unknown names and options are one clear error."""
    if method not in METHODS:
        raise PipelineError(f"unknown PEFT method {method!r}; choose one of {', '.join(METHODS)}")
    cls = METHODS[method]
    if placement is not None:
        if not issubclass(cls, BlockAdapterMethod):
            raise PipelineError(f"{method}: placement only applies to block adapters, not to {method}")
        options["placement"] = placement
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise PipelineError(f"{method} has no option {', '.join(unknown)}; its options are {listed}")
    config = cls(**options)
    config.validate()
    return config


__all__ = ["METHODS", "Method", "BlockAdapterMethod", "BottleneckMethod", "build_method"]
