"""Forward+backward time of large-kernel depthwise convolution: naive ``F.conv{2,3}d`` vs ``depthwise_conv``.

Prints two tables on synthetic random tensors (timing only, no accuracy meaning):

* 2D, batch 4, kernel 51, float32, r in {8, 16, 32} channels, maps 16² .. 128²: naive ``F.conv2d(groups=r,
  padding=25)`` vs ``depthwise_conv(mode="auto")``, the speed-up and the mode auto chose.
* 3D, batch 4, r=16, kernel 51, maps 12³, 24³, 48³: a full 51³ kernel naive vs ours (cropped, auto), and the
  decomposed (51,1,1)→(1,51,1)→(1,1,51) form naive vs ours. Naive runs predicted (by the fitted direct cost)
  to exceed ``--naive-limit`` seconds are skipped and the prediction is printed instead.

``--calibrate`` instead times both formulations over a grid of shapes and prints least-squares fits of the
constants in ``pipeline.peft.large_kernel._COSTS`` for the chosen device.

Usage, from the repository root:
``python -m benchmarks.large_kernel [--device cpu|cuda] [--repeats 5] [--quick] [--calibrate]``; on glibc CPUs
export ``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` first.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.peft.large_kernel import _COSTS, _fft_lengths, depthwise_conv, select_mode

KERNEL = 51


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(fn: Callable[[], torch.Tensor], device: torch.device, repeats: int) -> tuple[float, float]:
    """Median and minimum seconds of ``fn().sum().backward()`` after one warm-up (one run if the warm-up took > 5 s).

    The minimum is printed beside the median because on a CPU shared with other jobs it is the least disturbed.
    """
    start = time.perf_counter()
    fn().sum().backward()
    _sync(device)
    if time.perf_counter() - start > 5:
        repeats = 1
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().sum().backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _tensors(shape: tuple[int, ...], kernel: tuple[int, ...], device: torch.device):
    channels = shape[1]
    x = torch.randn(shape, device=device, requires_grad=True)
    w = (torch.randn(channels, 1, *kernel, device=device) / math.prod(kernel)).requires_grad_()
    b = torch.randn(channels, device=device, requires_grad=True)
    return x, w, b


def _naive(x, w, b):
    conv = F.conv2d if w.dim() == 4 else F.conv3d
    return conv(x, w, b, padding=[k // 2 for k in w.shape[2:]], groups=w.shape[0])


def _predicted_naive(shape: tuple[int, ...], kernel: tuple[int, ...], device: torch.device) -> float:
    costs = _COSTS.get(device.type, _COSTS["cpu"])
    return costs["direct"] * math.prod(shape) * math.prod(kernel) + costs["direct_overhead"]


def _fmt_ms(seconds: float | None) -> str:
    return "skipped" if seconds is None else f"{seconds * 1000:.1f}"


def table_2d(device: torch.device, repeats: int, quick: bool) -> None:
    print(f"2D depthwise, batch 4, kernel {KERNEL}x{KERNEL}, float32, forward+backward, median of {repeats} (ms)")
    print("speed-up: of the medians; (min): of the fastest runs")
    print(f"{'r':>3} {'map':>8} {'naive':>10} {'ours':>9} {'speed-up':>9} {'(min)':>8}  auto mode")
    for r in (16,) if quick else (8, 16, 32):
        for n in (16, 64) if quick else (16, 32, 64, 128):
            shape, kernel = (4, r, n, n), (KERNEL, KERNEL)
            x, w, b = _tensors(shape, kernel, device)
            naive, naive_min = time_fwd_bwd(lambda: _naive(x, w, b), device, repeats)
            ours, ours_min = time_fwd_bwd(lambda: depthwise_conv(x, w, b), device, repeats)
            mode = select_mode(shape, tuple(min(k, 2 * n - 1) for k in kernel), device)
            print(
                f"{r:>3} {f'{n}x{n}':>8} {naive * 1000:>10.1f} {ours * 1000:>9.1f} {naive / ours:>8.1f}x"
                f" {naive_min / ours_min:>7.1f}x  {mode}"
            )


def _decomposed(x, weights, biases, fn):
    for w, b in zip(weights, biases):
        x = fn(x, w, b)
    return x


def table_3d(device: torch.device, repeats: int, quick: bool, naive_limit: float) -> None:
    r = 16
    print(f"\n3D depthwise, batch 4, r={r}, kernel {KERNEL}, float32, forward+backward, median of {repeats} (ms)")
    print(
        f"{'map':>9} {'full naive':>16} {'full ours':>10} {'auto':>6} {'decomp naive':>13} {'decomp ours':>12}"
        f" {'full/decomp':>12}"
    )
    for n in (12, 24) if quick else (12, 24, 48):
        shape, full = (4, r, n, n, n), (KERNEL,) * 3
        x, w, b = _tensors(shape, full, device)
        predicted = _predicted_naive(shape, full, device)
        naive_full = None
        if predicted <= naive_limit:
            naive_full, _ = time_fwd_bwd(lambda: _naive(x, w, b), device, repeats)
        ours_full, _ = time_fwd_bwd(lambda: depthwise_conv(x, w, b), device, repeats)
        mode = select_mode(shape, tuple(min(KERNEL, 2 * n - 1) for _ in range(3)), device)
        axial = [tuple(KERNEL if a == d else 1 for d in range(3)) for a in range(3)]
        weights = [_tensors(shape, k, device)[1] for k in axial]
        biases = [torch.randn(r, device=device, requires_grad=True) for _ in axial]
        naive_dec, _ = time_fwd_bwd(lambda: _decomposed(x, weights, biases, _naive), device, repeats)
        ours_dec, _ = time_fwd_bwd(lambda: _decomposed(x, weights, biases, depthwise_conv), device, repeats)
        naive_text = _fmt_ms(naive_full) if naive_full is not None else f"~{predicted:.0f}s predicted"
        print(
            f"{f'{n}^3':>9} {naive_text:>16} {_fmt_ms(ours_full):>10} {mode:>6} {_fmt_ms(naive_dec):>13}"
            f" {_fmt_ms(ours_dec):>12} {ours_full / ours_dec:>11.1f}x"
        )
        del x, w, b, weights, biases


def _fit(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """``t ≈ a·work + c`` minimising relative error; ``c`` clamped at 0."""
    work, seconds = np.array(rows).T
    (a, c), *_ = np.linalg.lstsq(np.stack([work / seconds, 1 / seconds], 1), np.ones_like(work), rcond=None)
    if c < 0:
        a, c = float(np.sum(work / seconds) / np.sum((work / seconds) ** 2)), 0.0
    return float(a), float(c)


def calibrate(device: torch.device, repeats: int) -> None:
    """Time both formulations over 2D/3D shapes (direct skipped above ~1.5 s) and fit the cost constants."""
    shapes = [((2, 16, n, n), (k, k)) for n in (8, 16, 32, 64, 96) for k in (3, 5, 9, 17, 33, 51)]
    shapes += [((1, 8, n, n, n), (k, k, k)) for n in (8, 16, 24) for k in (3, 5, 9, 17)]
    shapes += [((2, 8, n, n, n), (k, 1, 1)) for n in (16, 32, 48) for k in (3, 9, 25, 51)]
    direct_rows, fft_rows = [], []
    print(f"{'shape':>22} {'kernel':>14} {'direct ms':>10} {'fft ms':>8}")
    for shape, kernel in shapes:
        spatial = shape[2:]
        kernel = tuple(min(k, 2 * n - 1) for k, n in zip(kernel, spatial))
        x, w, b = _tensors(shape, kernel, device)
        macs = math.prod(shape) * math.prod(kernel)
        direct = None
        if _predicted_naive(shape, kernel, device) < 1.5:
            direct, _ = time_fwd_bwd(lambda: depthwise_conv(x, w, b, "direct"), device, repeats)
            direct_rows.append((macs, direct))
        fft, _ = time_fwd_bwd(lambda: depthwise_conv(x, w, b, "fft"), device, repeats)
        axes, lengths = _fft_lengths(kernel, spatial)
        size = math.prod(lengths)
        signals = shape[0] * shape[1] * math.prod(n for a, n in enumerate(spatial) if a not in axes) + shape[1]
        fft_rows.append((signals * size * math.log2(size), fft))
        print(f"{str(shape):>22} {str(kernel):>14} {_fmt_ms(direct):>10} {_fmt_ms(fft):>8}")
    direct_a, direct_c = _fit(direct_rows)
    fft_a, fft_c = _fit(fft_rows)
    print(f"\nfitted for {device.type}: direct {direct_a:.3e} s/MAC + overhead {direct_c:.2e} s, "
          f"fft {fft_a:.3e} s/(n log2 n) + overhead {fft_c:.2e} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--quick", action="store_true", help="a few shapes only (smoke test)")
    parser.add_argument("--calibrate", action="store_true", help="fit the cost-model constants instead")
    parser.add_argument("--naive-limit", type=float, default=30.0, help="skip naive runs predicted above this (s)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if args.calibrate:
        calibrate(device, args.repeats)
        return
    table_2d(device, args.repeats, args.quick)
    table_3d(device, args.repeats, args.quick, args.naive_limit)


if __name__ == "__main__":
    main()
