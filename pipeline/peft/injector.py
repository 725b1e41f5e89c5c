"""``apply_peft``: freeze a backbone, insert one method into the chosen blocks, and say what now trains.

The model remembers what was done (``model.peft_state``) so optimizer groups and adapter-only checkpoints can be
derived from it later without the caller repeating the method and its options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from pipeline.engine.distributed import unwrap
from pipeline.errors import PipelineError
from pipeline.peft.methods import build_method
from pipeline.peft.selection import select_blocks
from pipeline.peft.spec import PeftSpec, spec_of


@dataclass
class PeftState:
    """What ``apply_peft`` did: enough to rebuild it on a fresh backbone and to check a checkpoint against it."""

    method: str
    options: dict
    layers: list[int]
    backbone: str
    adapter: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"method": self.method, "options": self.options, "layers": self.layers, "backbone": self.backbone}


@dataclass
class PeftReport:
    """Trainable and total parameter counts per group: ``adapter`` (what the method trains), ``head``, ``backbone``."""

    state: PeftState
    groups: dict[str, tuple[int, int]]

    @property
    def trainable(self) -> int:
        return sum(trainable for trainable, _ in self.groups.values())

    @property
    def total(self) -> int:
        return sum(total for _, total in self.groups.values())

    def __str__(self) -> str:
        rows = [f"{self.state.method} on {self.state.backbone}, blocks {self.state.layers}",
                f"{'group':<10}{'trainable':>14}{'total':>14}"]
        rows += [f"{name:<10}{t:>14,}{n:>14,}" for name, (t, n) in self.groups.items()]
        rows.append(f"{'all':<10}{self.trainable:>14,}{self.total:>14,}  ({100 * self.trainable / self.total:.3f} %)")
        return "\n".join(rows)


def _freeze_batch_norms(model: nn.Module) -> None:
    """Swap frozen BatchNorm2d for torchvision's FrozenBatchNorm2d.

    Otherwise training mode would keep updating the running statistics of a "frozen" backbone (TinyViT is full
    of BatchNorm), and adapter-only checkpoints could not reproduce the trained model.
    """
    for name, module in list(model.named_modules()):
        if type(module) is nn.BatchNorm2d and not any(p.requires_grad for p in module.parameters()):
            frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
            model.set_submodule(name, frozen)


def apply_peft(model: nn.Module, method: str, layers: str | int | Sequence[int] | None = None,
               placement: str | None = None, spec: PeftSpec | None = None, **options) -> PeftReport:
    """Freeze ``model``, insert ``method`` into the blocks named by ``layers`` and return the parameter report.

    ``layers`` is "bottom" | "middle" | "top" | "all" or block indices into the spec's blocks; ``placement``
    ("parallel" | "sequential" | "branch") overrides a block adapter's default; ``options`` are the method's own
    (see ``python -m pipeline methods``). What is left out comes from the backbone's recipe for ``method``
    (:attr:`PeftSpec.recipes`), else ``layers="middle"`` and the method's defaults. The task head listed in the
    spec always trains.
    """
    if getattr(model, "peft_state", None) is not None:
        raise PipelineError(f"this model already has {model.peft_state.method} applied; build a fresh backbone")
    spec = spec or spec_of(model)
    recipe = spec.recipes.get(method, {})
    layers = recipe.get("layers", "middle") if layers is None else layers
    placement = recipe.get("placement") if placement is None else placement
    options = {**recipe.get("options", {}), **options}
    config = build_method(method, placement=placement, **options)
    indices = select_blocks(spec, layers)

    model.requires_grad_(False)
    trained = config.inject(model, [(i, spec.blocks[i]) for i in indices])
    head = [p for path in spec.head for p in model.get_submodule(path).parameters()]
    for parameter in [*trained, *head]:
        parameter.requires_grad_(True)
    _freeze_batch_norms(model)

    head_ids = {id(p) for p in head}
    trained_ids = {id(p) for p in trained} - head_ids
    named = list(model.named_parameters())
    state = PeftState(
        method=method, options=config.options(), layers=indices, backbone=spec.name,
        adapter=[n for n, p in named if id(p) in trained_ids],
        head=[n for n, p in named if id(p) in head_ids],
    )
    model.peft_state = state

    def count(names: set[str]) -> tuple[int, int]:
        members = [p for n, p in named if n in names]
        return sum(p.numel() for p in members if p.requires_grad), sum(p.numel() for p in members)

    adapter, head_names = set(state.adapter), set(state.head)
    backbone = {n for n, _ in named} - adapter - head_names
    return PeftReport(state, {"adapter": count(adapter), "head": count(head_names), "backbone": count(backbone)})


def peft_state_of(model: nn.Module) -> PeftState:
    """The model's :class:`PeftState`, looking through DDP / DataParallel wrappers."""
    inner = unwrap(model)
    state = getattr(inner, "peft_state", None)
    if state is None:
        raise PipelineError(f"{type(inner).__name__} has no adapters yet: call pipeline.peft.apply_peft first")
    return state
