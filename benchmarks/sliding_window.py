"""3D sliding-window inference: the Swin-UNETR(+DKA) hippocampus bundle's inferer vs MONAI's function called directly.

Both the network and the inferer come from the bundle's own ``train.json`` through ``monai.bundle.ConfigParser``
(``network_def`` is ``build_network("swin_unetr", method="dka", spatial_dims=3, ...)`` with DKA in the middle Swin
stages; ``sliding_window`` is what validation, evaluation and inference run), so this measures what the bundle
runs. The reference is ``monai.inferers.sliding_window_inference`` with the roi size, overlap, window batch size and
blending mode read from that same config entry, on the same network and volume. The weights are random (no
checkpoint) and the volume is random noise: timing and agreement only, no accuracy.

Prints the median seconds of each (``--repeats`` timed runs after one warm-up, the two interleaved so that load on a
shared machine hits both alike, under ``torch.inference_mode``), the ratio bundle speed / direct speed (direct
seconds / bundle seconds; at least 1.0 means the bundle costs nothing extra) and the largest absolute difference of
the two outputs.

Usage, from the repository root: ``python -m benchmarks.sliding_window [--device cpu|cuda] [--repeats 3]
[--quick] [--size D H W] [--feature-size N]``; on glibc CPUs export
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference

TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "swin_unetr_dka_hippocampus" / "configs" / "train.json"
FULL_SIZE = (160, 160, 128)
QUICK_SIZE = (96, 96, 64)


def bundle_parts(device: str, feature_size: int | None = None) -> tuple[torch.nn.Module, Callable, ConfigParser]:
    """The bundle's network (eval mode, on ``device``) and sliding-window inferer, and the parser that made them."""
    parser = ConfigParser()
    parser.read_config(TRAIN_CONFIG)
    parser["device"] = f"$torch.device('{device}')"
    if feature_size is not None:
        parser["feature_size"] = feature_size
    network = parser.get_parsed_content("network").eval()
    return network, parser.get_parsed_content("sliding_window"), parser


def _timed(run: Callable[[], torch.Tensor], device: torch.device) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    output = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, output


def measure(size: tuple[int, int, int], device: str = "cpu", repeats: int = 3,
            feature_size: int | None = None) -> dict[str, float]:
    """Median seconds of the bundle's inferer and of the direct call on one random ``size`` volume, their speed
    ratio and the largest absolute difference of their outputs."""
    network, inferer, parser = bundle_parts(device, feature_size)
    window = {key: parser.get_parsed_content(f"sliding_window#{key}") for key in ("roi_size", "sw_batch_size",
                                                                                  "overlap", "mode")}
    volume = torch.rand(1, 1, *size, device=device)
    runs = {
        "bundle": lambda: inferer(volume, network),
        "direct": lambda: sliding_window_inference(volume, predictor=network, **window),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        outputs = {name: run() for name, run in runs.items()}  # warm-up, and the outputs compared
        for repeat in range(repeats):
            for name in (("bundle", "direct") if repeat % 2 == 0 else ("direct", "bundle")):
                times[name].append(_timed(runs[name], volume.device)[0])
    bundle, direct = statistics.median(times["bundle"]), statistics.median(times["direct"])
    return {"bundle_s": bundle, "direct_s": direct, "ratio": direct / bundle,
            "max_abs_diff": float((outputs["bundle"] - outputs["direct"]).abs().max())}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    parser.add_argument("--quick", action="store_true", help=f"a {'x'.join(map(str, QUICK_SIZE))} volume")
    parser.add_argument("--size", type=int, nargs=3, metavar=("D", "H", "W"), help="volume size (overrides --quick)")
    parser.add_argument("--feature-size", type=int, help="Swin-UNETR feature size (default: the bundle's)")
    args = parser.parse_args(argv)
    size = tuple(args.size or (QUICK_SIZE if args.quick else FULL_SIZE))
    result = measure(size, args.device, args.repeats, args.feature_size)
    print(f"volume {'x'.join(map(str, size))}, device {args.device}, median of {args.repeats} after a warm-up")
    print(f"bundle inferer (train.json sliding_window): {result['bundle_s']:.3f} s")
    print(f"direct sliding_window_inference:            {result['direct_s']:.3f} s")
    print(f"ratio bundle/direct speed: {result['ratio']:.3f} (target >= 1.0)")
    print(f"outputs max abs diff: {result['max_abs_diff']:.3g}")
    return result


if __name__ == "__main__":
    main()
