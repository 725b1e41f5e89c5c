"""Look inside a prompt-free SAM-family run that never started: did its mask decoder's pixel features collapse?

A run whose head predicts all background for its whole budget (validation Dice 0 at every round) either never
moved its foreground token away from the background's, or lost the spatial detail that token reads: the decoder's
upscaled pixel features. This prints, over the run's first validation images, how much the foreground-minus-
background logit varies across an image (a constant offset predicts the prior everywhere), how much the upscaled
features vary across it (mean over channels), and the share of their last pre-activations below 0 (GELU's flat
side); the same for the shipped decoder as the reference:

    python tools/head_collapse.py runs/kvasir_head_start/runs/probe*/split_k10_s1 --last
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.engine.handlers import read_resume_state  # noqa: E402
from pipeline.engine.network import build_network  # noqa: E402
from pipeline.models import build_backbone  # noqa: E402
from pipeline.peft.checkpoint import read_adapter  # noqa: E402


def network(run: Path | None, settings: dict, last: bool) -> torch.nn.Module:
    """``run``'s network (its best ``model.pt``, or with ``last`` its final resume state); without ``run`` the
    shipped one; either built with the bundle ``settings`` a ``model.pt`` records."""
    options = {key: settings[key] for key in ("checkpoint", "prompt", "num_classes")}
    if run is None:
        return build_backbone(settings["backbone"], **options).eval()
    model = build_network(settings["backbone"], adapter=str(run / "models" / "model.pt"), **options)
    if last:
        model.load_state_dict(read_resume_state(run / "models" / "resume.pt")["network"], strict=False)
    return model.eval()


def statistics(model: torch.nn.Module, images: list[torch.Tensor]) -> dict:
    """The three measures of the module docstring for ``model``, each the mean over ``images``."""
    upscaling = model.mask_decoder.output_upscaling
    seen = {}
    hooks = [upscaling[-2].register_forward_hook(lambda m, i, out: seen.__setitem__("pre", out)),
             upscaling[-1].register_forward_hook(lambda m, i, out: seen.__setitem__("post", out))]
    gap, spread, negative = [], [], []
    with torch.no_grad():
        for image in images:
            logits = model(image)
            gap.append((logits[0, 1] - logits[0, 0]).std().item())
            spread.append(seen["post"].flatten(2).std(-1).mean().item())
            negative.append((seen["pre"] < 0).float().mean().item())
    for hook in hooks:
        hook.remove()
    return {"logit gap spatial std": np.mean(gap), "upscaled features spatial std": np.mean(spread),
            "pre-activations < 0": np.mean(negative)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="prompt-free bundle run folders (holding models/)")
    parser.add_argument("--last", action="store_true", help="the runs' last state (models/resume.pt), not the best")
    parser.add_argument("--images", type=int, default=4, help="validation images of the first run's split")
    args = parser.parse_args(argv)
    cases = json.loads((args.runs[0] / "split.json").read_text())["validation"][: args.images]
    images = [torch.from_numpy(np.array(Image.open(case["image"]).convert("RGB"))).permute(2, 0, 1)[None].float()
              for case in cases]
    settings = read_adapter(args.runs[0] / "models" / "model.pt")["settings"]
    for run in (None, *args.runs):
        found = statistics(network(run, settings, args.last), images)
        print(f"{run or 'shipped decoder'}: " + ", ".join(f"{key} {value:.3f}" for key, value in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
