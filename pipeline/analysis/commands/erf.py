"""``python -m pipeline erf``: effective receptive field of a SAM-family encoder, frozen or with a trained adapter."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", help="folder of 2D images (PNG/JPG), e.g. a Kvasir-SEG images/ folder")
    parser.add_argument("--backbone", default="litemedsam", help="registered backbone (SAM family)")
    parser.add_argument("--checkpoint", default=None, help="backbone weights, for backbones that do not ship them")
    parser.add_argument(
        "--adapter", help="adapter checkpoint (a bundle's models/model.pt); without it: frozen backbone"
    )
    parser.add_argument("--count", type=int, default=8, help="first N images by file name")
    parser.add_argument("-o", "--output", required=True, help="JSON with the area ratios and the settings")
    parser.add_argument("--png", help="also write the contribution map as a log-scaled PNG heat map")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np
    import torch
    from PIL import Image

    from pipeline.analysis.erf import contribution_map, erf_ratios
    from pipeline.data.formats import IMAGE_2D_SUFFIXES, has_suffix
    from pipeline.errors import PipelineError
    from pipeline.models import build_backbone
    from pipeline.peft import load_adapter

    files = sorted(p for p in Path(args.images).iterdir() if has_suffix(p, IMAGE_2D_SUFFIXES))[: args.count]
    if not files:
        raise PipelineError(f"{args.images} holds no 2D images ({', '.join(IMAGE_2D_SUFFIXES)})")
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    model = build_backbone(args.backbone, **options)
    if args.adapter:
        load_adapter(model, args.adapter)
    model.eval()
    model.requires_grad_(False)

    def prepared(path: Path) -> torch.Tensor:
        array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        return model.prepare(torch.from_numpy(array).permute(2, 0, 1)[None])[0][0]

    contribution = contribution_map(model.image_encoder, (prepared(p) for p in files))
    result = {"backbone": args.backbone, "adapter": args.adapter, "images": [p.name for p in files],
              "input_shape": list(contribution.shape), **erf_ratios(contribution)}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        heat = torch.log1p(contribution / contribution.max() * 1e3)
        Image.fromarray((heat / heat.max() * 255).byte().numpy()).save(args.png)
    print(json.dumps({k: v for k, v in result.items() if k.startswith("t=")}))
    return 0
