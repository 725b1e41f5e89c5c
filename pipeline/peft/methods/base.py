"""What every PEFT method is: a dataclass of its options that can check itself and inject itself into a model.

``inject`` returns the parameters the method trains; the injector has already frozen everything, so a method
never has to know about the rest of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft.modules import PLACEMENTS, AdaptedBlock, AdaptedBranch, zero_up_projection
from pipeline.peft.spec import BlockSite

# "zero" zeroes the adapter's last projection so the adapted model starts equal to the frozen one; "paper" keeps
# the layers' own PyTorch initialisation, as the DKA paper did. "paper" was spelt "default" until 2026-11-28:
# records and checkpoints with that name still load (:meth:`BlockAdapterMethod.__post_init__` maps it). Block
# adapters start at zero but the telescopic one (its paper's recipe). DKA and LKA started at "paper" until
# 2026-11-28: DKA's random 51x51 branch moves the frozen features from the first step, which kept the prompt-free
# head from ever predicting foreground on 2 of 3 seeds at 5 Kvasir-SEG images, and zero init led on every seed at
# every adapter LR tried (docs/results.md).
INITS = ("paper", "zero")
INIT_ALIASES = {"default": "paper"}


def require_positive(method: str, name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise PipelineError(f"{method}: {name} must be a positive integer, got {value!r}")


def require_odd(method: str, name: str, value) -> None:
    require_positive(method, name, value)
    if value % 2 == 0:
        raise PipelineError(f"{method}: {name} must be odd (a centred 'same' kernel), got {value}")


def require_choice(method: str, name: str, value, choices) -> None:
    if value not in choices:
        raise PipelineError(f"{method}: {name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def require_fraction(method: str, name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise PipelineError(f"{method}: {name} must be in [0, 1), got {value!r}")


Sites = list[tuple[int, BlockSite]]


@dataclass(kw_only=True)
class Method:
    """Base of all methods. ``name`` is the registry key; fields are the method's options."""

    name: ClassVar[str]

    def validate(self) -> None:
        """Raise :class:`PipelineError` on a bad option."""

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        raise NotImplementedError

    def options(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class BlockAdapterMethod(Method):
    """A method that wraps each chosen block with a bottleneck adapter (DKA, LKA, Adapter, AdaptFormer, ...).

    ``placement="branch"`` puts one adapter on each residual branch a site names (:attr:`BlockSite.branches`:
    CLIPSeg's attention and MLP), before the residual add; a site naming none is adapted on its output.
    ``spatial`` methods convolve a token map and refuse sites without one (a text encoder's 1-D sequence).
    """

    spatial: ClassVar[bool] = False
    placement: str = "parallel"
    init: str = "zero"

    def __post_init__(self) -> None:
        if isinstance(self.init, str):
            self.init = INIT_ALIASES.get(self.init, self.init)

    def validate(self) -> None:
        require_choice(self.name, "placement", self.placement, PLACEMENTS)
        require_choice(self.name, "init", self.init, INITS)

    def build(self, site: BlockSite, position: int, count: int) -> nn.Module:
        """The adapter for ``site``, the ``position``-th of ``count`` chosen blocks of its group (telescopic widths
        use it)."""
        raise NotImplementedError

    def _wrap(self, model: nn.Module, path: str, adapter: nn.Module, branch: bool) -> None:
        base = model.get_submodule(path)
        wrapped = AdaptedBranch(base, adapter) if branch else AdaptedBlock(base, adapter, self.placement)
        model.set_submodule(path, wrapped)

    def inject(self, model: nn.Module, sites: Sites) -> list[nn.Parameter]:
        if self.spatial:
            flat = [site.path for _, site in sites if site.layout.spatial_dims == 0]
            if flat:
                raise PipelineError(
                    f"{self.name} convolves a spatial token map, but {', '.join(flat)} hold 1-D token sequences "
                    "(no image positions); choose those blocks with a token-wise method (telescopic, adapter, "
                    "adaptformer, lora, bitfit)"
                )
        trained = []
        for _, site in sites:
            group = [other for _, other in sites if other.group == site.group]
            branch = self.placement == "branch"
            paths = [f"{site.path}.{name}" for name in site.branches] if branch and site.branches else [site.path]
            for path in paths:
                adapter = self.build(site, group.index(site), len(group))
                if self.init == "zero":
                    zero_up_projection(adapter)
                self._wrap(model, path, adapter, branch and bool(site.branches))
                trained.extend(adapter.parameters())
        return trained


@dataclass(kw_only=True)
class BottleneckMethod(BlockAdapterMethod):
    """A block adapter with one bottleneck width ``r`` and a dropout (all but the telescopic adapter)."""

    r: int = 16
    dropout: float = 0.1

    def validate(self) -> None:
        super().validate()
        require_positive(self.name, "r", self.r)
        require_fraction(self.name, "dropout", self.dropout)
