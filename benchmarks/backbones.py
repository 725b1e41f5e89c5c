"""Parameter counts per backbone x adapter method, and CPU forward time / peak memory of two backbones.

Prints two markdown tables:

* ``params``: total and trainable parameters after ``apply_peft(model, method, layers="middle")`` with each
  method's defaults, for every registered backbone (box-prompted SAM family, Swin-UNETR with ``feature_size=48``
  as MONAI's self-supervised weights have it, 1 input channel, 2 classes). SAM ViT-B/L/H and MedSAM ViT-B are
  built on PyTorch's ``meta`` device: the official architecture, counted without allocating (or having) weights.
* ``forward``: LiteMedSAM (shipped weights) on a 256² image with a box, and Swin-UNETR 3D on a 96³ volume, plain
  and with DKA in the middle blocks. Each row runs in its own subprocess so peak memory is that row's alone:
  ``peak RSS`` is the process's resident-set peak (``ru_maxrss``), ``forward extra`` the most the resident set
  grew during the forward passes (sampled every 2 ms). Inputs are synthetic random tensors: timing only.
* ``zeroshot`` (real data): LiteMedSAM with its shipped weights, box-prompted with each mask's bounding box, on
  the first ``--count`` Kvasir-SEG images sorted by name (masks binarised at > 127): mean Dice next to the Dice of
  simply filling the box.

Usage, from the repository root:
``python -m benchmarks.backbones [--repeats 3] [--threads 2] [--only params|forward|zeroshot] [--count 40]
[--data ../shared/data]``; on glibc CPUs export
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

METHODS = ("dka", "adapter", "lora", "linear_probe")
OFFICIAL_SAM = ("sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b")
FORWARD_CASES = {
    "litemedsam_256": ("litemedsam", {}, (1, 3, 256, 256)),
    "swin_unetr_3d_96": ("swin_unetr", {"spatial_dims": 3, "feature_size": 48, "num_classes": 2}, (1, 1, 96, 96, 96)),
}


def _build(name: str):
    from pipeline.models import build_backbone

    if name in OFFICIAL_SAM:
        with torch.device("meta"):
            return build_backbone(name)
    if name.startswith("swin_unetr"):
        return build_backbone("swin_unetr", spatial_dims=int(name[-2]), feature_size=48, num_classes=2)
    return build_backbone(name)


def params_table() -> str:
    from pipeline.peft import apply_peft

    rows = ["| backbone | total (plain) | " + " | ".join(f"{m} trainable / total" for m in METHODS) + " |",
            "|---|---:|" + "---:|" * len(METHODS)]
    for name in ("litemedsam", *OFFICIAL_SAM, "swin_unetr_2d", "swin_unetr_3d"):
        plain = sum(p.numel() for p in _build(name).parameters())
        cells = []
        for method in METHODS:
            model = _build(name)
            if name in OFFICIAL_SAM:
                with torch.device("meta"):
                    report = apply_peft(model, method, layers="middle")
            else:
                report = apply_peft(model, method, layers="middle")
            cells.append(f"{report.trainable:,} / {report.total:,} ({100 * report.trainable / report.total:.2f} %)")
        rows.append(f"| {name} | {plain:,} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _forward_row(case: str, method: str, repeats: int) -> dict:
    """Runs in a subprocess: build, optionally add DKA, time ``repeats`` no-grad forwards after one warm-up."""
    from pipeline.models import build_backbone
    from pipeline.peft import apply_peft

    name, kwargs, shape = FORWARD_CASES[case]
    model = build_backbone(name, **kwargs)
    if method != "none":
        apply_peft(model, method, layers="middle")
    model.eval()
    image = torch.rand(shape) * (255 if name == "litemedsam" else 1)
    boxes = torch.tensor([[40.0, 50.0, 200.0, 180.0]]) if name == "litemedsam" else None
    start_rss, peak = _rss_bytes(), [0]
    running = threading.Event()
    running.set()

    def sample():
        while running.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    times = []
    with torch.no_grad():
        model(image, boxes)
        for _ in range(repeats):
            begin = time.perf_counter()
            model(image, boxes)
            times.append(time.perf_counter() - begin)
    running.clear()
    sampler.join()
    return {
        "median_s": statistics.median(times),
        "forward_extra_mib": (peak[0] - start_rss) / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in model.parameters()),
    }


def forward_table(repeats: int, threads: int) -> str:
    rows = ["| model | input | adapters | params | forward median (s) | forward extra (MiB) | peak RSS (MiB) |",
            "|---|---|---|---:|---:|---:|---:|"]
    for case, (_, _, shape) in FORWARD_CASES.items():
        for method in ("none", "dka"):
            command = [sys.executable, "-m", "benchmarks.backbones", "--row", case, method,
                       "--repeats", str(repeats), "--threads", str(threads)]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            size = "x".join(str(s) for s in shape[2:])
            rows.append(f"| {case.rsplit('_', 1)[0]} | {size} | {method} | {result['params']:,} | "
                        f"{result['median_s']:.2f} | {result['forward_extra_mib']:.0f} | "
                        f"{result['peak_rss_mib']:.0f} |")
    return "\n".join(rows)


def zero_shot_table(data: str, count: int) -> str:
    import numpy as np
    from PIL import Image

    from pipeline.engine.prompts import boxes_from_labels
    from pipeline.models import build_backbone

    model = build_backbone("litemedsam")
    folder = os.path.join(data, "kvasir_seg")
    names = sorted(os.listdir(os.path.join(folder, "images")))[:count]
    model_dice, box_dice = [], []
    for name in names:
        image = np.asarray(Image.open(os.path.join(folder, "images", name)).convert("RGB"))
        mask = torch.from_numpy(np.asarray(Image.open(os.path.join(folder, "masks", name)).convert("L")) > 127)
        box = boxes_from_labels(mask[None])
        with torch.no_grad():
            prediction = model(torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float(), box)[0, 0] > 0
        x0, y0, x1, y1 = box[0].int().tolist()
        filled = torch.zeros_like(mask)
        filled[y0 : y1 + 1, x0 : x1 + 1] = True
        model_dice.append(float(2 * (prediction & mask).sum() / (prediction.sum() + mask.sum())))
        box_dice.append(float(2 * (filled & mask).sum() / (filled.sum() + mask.sum())))
    return "\n".join([
        "| Kvasir-SEG images | LiteMedSAM mean Dice | min | box-fill mean Dice |",
        "|---:|---:|---:|---:|",
        f"| first {len(names)} | {np.mean(model_dice):.4f} | {np.min(model_dice):.4f} | {np.mean(box_dice):.4f} |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("params", "forward", "zeroshot"))
    parser.add_argument("--count", type=int, default=40, help="Kvasir-SEG images for the zero-shot table")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"), help="the real data folder")
    parser.add_argument("--row", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.row:
        print(json.dumps(_forward_row(*args.row, args.repeats)))
        return
    if args.only in (None, "params"):
        print(params_table(), end="\n\n")
    if args.only in (None, "forward"):
        print(f"{torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.1f}")
        print(forward_table(args.repeats, args.threads), end="\n\n")
    if args.only in (None, "zeroshot"):
        print(zero_shot_table(args.data, args.count))


if __name__ == "__main__":
    main()
