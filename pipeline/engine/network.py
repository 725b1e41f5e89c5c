"""The network a bundle trains or runs: a registered backbone with a PEFT method applied (or loaded).

Training builds ``backbone`` + ``method``; evaluation and inference pass ``adapter=`` instead, and the adapter-only
checkpoint re-applies the method it was trained with (:func:`pipeline.peft.load_adapter`), so those configs never
need to repeat the method's options. A :class:`~pipeline.models.FeatureCache` given as ``feature_cache`` is
attached to the network, so training steps, validation rounds, evaluation and inference all reuse the frozen
prefix's outputs (backbones with ``encoder_steps``: the SAM family).
"""

from __future__ import annotations

import logging

from torch import nn

from pipeline.errors import PipelineError
from pipeline.models import FeatureCache, build_backbone
from pipeline.peft import apply_peft, load_adapter

logger = logging.getLogger(__name__)


def build_network(backbone: str, method: str | None = "dka", layers=None, method_options: dict | None = None,
                  adapter: str | None = None, feature_cache: FeatureCache | None = None,
                  **backbone_options) -> nn.Module:
    """``build_backbone(backbone, **backbone_options)``, then ``apply_peft`` (training) or ``load_adapter``.

    With ``adapter`` set, ``method``/``layers``/``method_options`` are ignored: the checkpoint says what to apply.
    """
    model = build_backbone(backbone, **backbone_options)
    if feature_cache is not None:
        if not hasattr(model, "encoder_steps"):
            raise PipelineError(f"backbone {backbone!r} cannot use a frozen-prefix cache; set cache to false")
        model.feature_cache = feature_cache
    if adapter is not None:
        load_adapter(model, adapter)
        logger.info(f"{backbone}: loaded adapter checkpoint {adapter} ({model.peft_state.method})")
        return model
    report = apply_peft(model, method, layers=layers, **(method_options or {}))
    logger.info(f"{backbone} with {method}:\n{report}")
    return model
