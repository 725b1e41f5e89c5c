"""``python -m pipeline erf``: effective receptive fields of a SAM-family encoder, frozen and with trained adapters,
side by side.

The frozen encoder is always measured first, then each ``--adapter [LABEL=]MODEL.pt``: one JSON with every
encoder's area ratios, and with ``--png`` one figure, a panel per encoder on one shared logarithmic colour scale
with a colour bar, so the panels compare by eye as the numbers do.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", help="folder of 2D images (PNG/JPG/...), e.g. a Kvasir-SEG images/ folder")
    parser.add_argument("--backbone", default="litemedsam", help="registered backbone (SAM family)")
    parser.add_argument("--checkpoint", default=None, help="backbone weights, for backbones that do not ship them")
    parser.add_argument("--adapter", action="append", default=[], metavar="[LABEL=]MODEL.pt",
                        help="an adapter checkpoint (a bundle's models/model.pt) to measure beside the frozen "
                             "encoder; repeat for several. LABEL names its panel (default: the checkpoint's method)")
    parser.add_argument("--count", type=int, default=8, help="first N images by file name")
    parser.add_argument("-o", "--output", required=True, help="JSON with the area ratios and the settings")
    parser.add_argument("--png", help="also write the contribution maps as one colour-mapped figure")


def _labelled(given: str) -> tuple[str | None, str]:
    label, _, path = given.rpartition("=")
    return label or None, path


def load_encoder_adapter(model, path) -> str:
    """Apply the adapter checkpoint at ``path`` to ``model``'s image encoder and return its method.

    Only the encoder's tensors are loaded: the ERF is a property of the encoder, and this way an adapter trained
    with any head (box-prompted or prompt-free, any class count) is measured on the same frozen model.
    """
    from pipeline.peft import load_adapter, peft_state_of

    load_adapter(model, path, prefix="image_encoder.")
    return peft_state_of(model).method


def measured_models(backbone: str, options: dict, adapters: list[str]) -> list[tuple]:
    """``(label, checkpoint, model)`` for the frozen encoder and each ``[LABEL=]MODEL.pt``, every checkpoint loaded
    (and a wrong one refused) before the first, slow, measurement. A label names a panel; it never replaces the
    loading."""
    from pipeline.models import build_backbone

    models = []
    for given in [None, *adapters]:
        model = build_backbone(backbone, **options)
        label, adapter = ("frozen", None) if given is None else _labelled(given)
        if adapter is not None:
            method = load_encoder_adapter(model, adapter)
            label = label or method
        models.append((label, adapter, model.eval().requires_grad_(False)))
    return models


def _prepared(model, path):
    """The encoder input ``model`` makes of the image at ``path`` (its own resizing and intensity scaling)."""
    import numpy as np
    import torch
    from PIL import Image

    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return model.prepare(torch.from_numpy(array).permute(2, 0, 1)[None])[0][0]


def figure(maps: list[tuple], path: str) -> None:
    """One panel per ``(label, contribution map, ratios)``: ``log10`` of the contribution relative to the largest
    value over all panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    peak = max(float(contribution.max()) for _, contribution, _ in maps)
    canvas, axes = plt.subplots(1, len(maps), figsize=(3.2 * len(maps) + 0.8, 3.4), dpi=120, squeeze=False)
    for axis, (label, contribution, ratios) in zip(axes[0], maps, strict=True):
        image = axis.imshow(torch.log10(contribution / peak + 1e-6).numpy(), cmap="magma", vmin=-4, vmax=0)
        axis.set_title(f"{label}\nt=0.5 area {ratios['t=0.5']:.3f}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    colour_bar = canvas.colorbar(image, ax=axes[0].tolist(), shrink=0.85)
    colour_bar.set_label("log10 contribution (relative to the largest)")
    canvas.savefig(path)
    plt.close(canvas)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pipeline.analysis.erf import contribution_map, erf_ratios
    from pipeline.data.formats import IMAGE_2D_SUFFIXES, has_suffix
    from pipeline.errors import PipelineError

    folder = Path(args.images)
    if not folder.is_dir():
        raise PipelineError(f"{folder} is not a folder of images")
    files = sorted(p for p in folder.iterdir() if has_suffix(p, IMAGE_2D_SUFFIXES))[: args.count]
    if not files:
        raise PipelineError(f"{args.images} holds no 2D images ({', '.join(IMAGE_2D_SUFFIXES)})")
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    encoders, maps = [], []
    for label, adapter, model in measured_models(args.backbone, options, args.adapter):
        contribution = contribution_map(model.image_encoder, (_prepared(model, p) for p in files))
        ratios = erf_ratios(contribution)
        encoders.append({"label": label, "adapter": adapter, **ratios})
        maps.append((label, contribution, ratios))
        print(json.dumps({"label": label, **ratios}), flush=True)
    result = {"backbone": args.backbone, "images": [p.name for p in files],
              "input_shape": list(maps[0][1].shape), "encoders": encoders}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        figure(maps, args.png)
    return 0
