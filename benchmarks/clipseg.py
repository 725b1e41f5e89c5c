"""CLIPSeg (the ``CIDAS/clipseg-rd64-refined`` architecture, random weights): parameters per method, forward time.

Prints two markdown tables:

* ``params``: trainable / total parameters after ``apply_peft(model, method)`` with each method's defaults and the
  backbone's recipe where it has one (``telescopic``: the paper's layers and widths), decoder frozen (the paper's
  setting, ``train_decoder=False``) and trained (``train_decoder=True``), and the telescopic count next to the
  paper's 613k. Built on PyTorch's ``meta`` device: the architecture, counted without allocating weights.
* ``forward``: median no-grad forward time of one 352² RGB image, one prompt, plain and with the telescopic recipe
  (random weights, random image: timing only), after one warm-up.

Usage, from the repository root: ``python -m benchmarks.clipseg [--only params|forward] [--repeats 3]
[--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

METHODS = ("telescopic", "dka", "lka", "adapter", "lora", "linear_probe", "full")
PAPER_TRAINABLE = 613_000  # "613k trainable parameters", arXiv 2512.13855


def _build(train_decoder: bool = False):
    from pipeline.models import build_backbone
    from pipeline.models.clipseg import rd64_refined_config

    return build_backbone("clipseg", config=rd64_refined_config(), prompts=["polyp"], train_decoder=train_decoder)


def _blocks(model, indices: list[int]) -> str:
    """``vision 0-8, text 6-8, conditional``: the chosen blocks by group, as 0-based layer numbers."""
    sites = model.peft_spec().blocks
    groups: dict[str, list[str]] = {}
    for i in indices:
        groups.setdefault(sites[i].group, []).append(sites[i].path.rsplit(".", 1)[-1])
    return ", ".join(
        group if group == "conditional" else f"{group} {numbers[0]}-{numbers[-1]}" for group, numbers in groups.items()
    )


def params_table() -> str:
    from pipeline.peft import apply_peft

    rows = ["| method | blocks (0-based) | trainable, decoder frozen | trainable, decoder trained | total |",
            "|---|---|---:|---:|---:|"]
    with torch.device("meta"):
        plain = sum(p.numel() for p in _build().parameters())
        for method in METHODS:
            counts = []
            for train_decoder in (False, True):
                model = _build(train_decoder)
                report = apply_peft(model, method)
                counts.append(report.trainable)
            blocks = "-" if method in ("linear_probe", "full") else _blocks(model, report.state.layers)
            rows.append(f"| {method} | {blocks} | {counts[0]:,} | {counts[1]:,} | {report.total:,} |")
            if method == "telescopic":
                telescopic = counts[0]
    rows.append("")
    rows.append(f"plain CLIPSeg: {plain:,} parameters. telescopic (paper recipe, decoder frozen): {telescopic:,} "
                f"trainable vs the paper's {PAPER_TRAINABLE:,} ({telescopic / PAPER_TRAINABLE:.3f}x); "
                f"{plain / telescopic:.0f}x fewer than end-to-end (paper: 244x)")
    return "\n".join(rows)


def forward_table(repeats: int) -> str:
    from pipeline.peft import apply_peft

    rows = ["| adapters | forward median (s) |", "|---|---:|"]
    image = torch.rand(1, 3, 352, 352) * 255
    for method in ("none", "telescopic"):
        model = _build()
        if method != "none":
            apply_peft(model, method)
        model.eval()
        times = []
        with torch.no_grad():
            model(image)
            for _ in range(repeats):
                begin = time.perf_counter()
                model(image)
                times.append(time.perf_counter() - begin)
        rows.append(f"| {method} | {statistics.median(times):.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("params", "forward"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only in (None, "params"):
        print(params_table(), end="\n\n")
    if args.only in (None, "forward"):
        print(f"{torch.get_num_threads()} threads, load average before: {os.getloadavg()[0]:.1f}")
        print(forward_table(args.repeats))


if __name__ == "__main__":
    main()
