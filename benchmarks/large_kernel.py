"""Forward+backward time of large-kernel depthwise convolution: naive ``F.conv{2,3}d`` vs ``depthwise_conv``.

Prints two tables on synthetic random tensors (timing only, no accuracy meaning), each row with naive ms, ours
ms, the speed-up (of the medians, and of the fastest runs) and the mode ``"auto"`` chose:

* 2D, batch 4, kernel 51, float32, r in {8, 16, 32} channels, maps 16² .. 128²: naive ``F.conv2d(groups=r,
  padding=25)`` vs ``depthwise_conv(mode="auto")``.
* 3D, batch 4, r=16, kernel 51, maps 12³, 24³, 48³: a full 51³ kernel naive vs ours (cropped, auto), and the
  decomposed (51,1,1)→(1,51,1)→(1,1,51) form naive vs ours. Naive runs predicted (by the fitted direct cost)
  to exceed ``--naive-limit`` seconds are skipped and the prediction is printed instead.

It ends by saying whether the targets hold: ours no slower than naive at every measured row, and at least
``TARGET_64``× at 64²·r16. ``--contended`` runs one busy process of its own throughout (the situation that
once made the FFT path slower than naive; see docs/large_kernel.md). ``--calibrate [direct|fft]`` instead
times both formulations (or the one named) over a grid of shapes and prints least-squares fits of the constants
in ``pipeline.peft.large_kernel._COSTS`` for the chosen device.

Usage, from the repository root: ``python -m benchmarks.large_kernel [--device cpu|cuda] [--repeats 5] [--quick]
[--contended] [--calibrate [direct|fft]]``; on glibc CPUs export
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736`` first.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.peft.large_kernel import _COSTS, _fft_lengths, depthwise_conv, select_mode

KERNEL = 51
TARGET_64 = 15  # required speed-up at a 64^2 map, r=16 (issue 10)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(
    fn: Callable[[], torch.Tensor], device: torch.device, repeats: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[float, float]:
    """Median and minimum seconds of ``fn().sum().backward()`` after one warm-up (one run if the warm-up took > 5 s).

    The minimum is printed beside the median because on a CPU shared with other jobs it is the least disturbed.
    ``clock`` is wall time unless a caller measures single-threaded work by the CPU time of its thread.
    """
    start = clock()
    fn().sum().backward()
    _sync(device)
    if clock() - start > 5:
        repeats = 1
    times = []
    for _ in range(repeats):
        start = clock()
        fn().sum().backward()
        _sync(device)
        times.append(clock() - start)
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


def _row(size: str, form: str, naive: tuple[float, float] | None, ours: tuple[float, float], mode: str,
         predicted: float | None = None) -> float | None:
    """Print one row (median ms, speed-up of the medians and of the fastest runs); return the median speed-up."""
    if naive is None:
        print(f"{size:>9} {form:>12} {f'~{predicted:.0f}s pred.':>12} {_fmt_ms(ours[0]):>10} {'':>9} {'':>8}  {mode}")
        return None
    print(
        f"{size:>9} {form:>12} {_fmt_ms(naive[0]):>12} {_fmt_ms(ours[0]):>10} {naive[0] / ours[0]:>8.1f}x"
        f" {naive[1] / ours[1]:>7.1f}x  {mode}"
    )
    return naive[0] / ours[0]


def _header(title: str, repeats: int) -> None:
    print(f"\n{title}, float32, forward+backward, median of {repeats} (ms)")
    print(f"{'map':>9} {'form':>12} {'naive':>12} {'ours':>10} {'speed-up':>9} {'(min)':>8}  mode")


def table_2d(device: torch.device, repeats: int, quick: bool) -> dict[str, float]:
    """2D rows; returns the speed-up of each measured row by its label."""
    _header(f"2D depthwise, batch 4, kernel {KERNEL}x{KERNEL}", repeats)
    speedups = {}
    for r in (16,) if quick else (8, 16, 32):
        for n in (16, 64) if quick else (16, 32, 64, 128):
            shape, kernel = (4, r, n, n), (KERNEL, KERNEL)
            x, w, b = _tensors(shape, kernel, device)
            naive = time_fwd_bwd(lambda x=x, w=w, b=b: _naive(x, w, b), device, repeats)
            ours = time_fwd_bwd(lambda x=x, w=w, b=b: depthwise_conv(x, w, b), device, repeats)
            speedups[f"{n}^2 r{r}"] = _row(f"{n}^2", f"r={r}", naive, ours, select_mode(shape, kernel, device))
    return speedups


def _decomposed(x, weights, biases, fn):
    for w, b in zip(weights, biases, strict=False):
        x = fn(x, w, b)
    return x


def table_3d(device: torch.device, repeats: int, quick: bool, naive_limit: float) -> dict[str, float]:
    """3D rows, full 51^3 kernel and the decomposed form; returns the speed-up of each measured row by its label."""
    r = 16
    _header(f"3D depthwise, batch 4, r={r}, kernel {KERNEL}", repeats)
    speedups = {}
    for n in (12, 24) if quick else (12, 24, 48):
        shape, full = (4, r, n, n, n), (KERNEL,) * 3
        x, w, b = _tensors(shape, full, device)
        predicted = _predicted_naive(shape, full, device)
        naive_full = (
            time_fwd_bwd(lambda x=x, w=w, b=b: _naive(x, w, b), device, repeats) if predicted <= naive_limit else None
        )
        ours_full = time_fwd_bwd(lambda x=x, w=w, b=b: depthwise_conv(x, w, b), device, repeats)
        speedups[f"{n}^3 full"] = _row(
            f"{n}^3", "full", naive_full, ours_full, select_mode(shape, full, device), predicted
        )
        axial = [tuple(KERNEL if a == d else 1 for d in range(3)) for a in range(3)]
        weights = [_tensors(shape, k, device)[1] for k in axial]
        biases = [torch.randn(r, device=device, requires_grad=True) for _ in axial]
        naive_dec = time_fwd_bwd(lambda x=x, w=weights, b=biases: _decomposed(x, w, b, _naive), device, repeats)
        ours_dec = time_fwd_bwd(lambda x=x, w=weights, b=biases: _decomposed(x, w, b, depthwise_conv), device, repeats)
        modes = "/".join(select_mode(shape, k, device) for k in axial)
        speedups[f"{n}^3 decomposed"] = _row(f"{n}^3", "decomposed", naive_dec, ours_dec, modes)
        print(f"{'':>9} full ours / decomposed ours: {ours_full[0] / ours_dec[0]:.1f}x")
    return speedups


def check_targets(speedups: dict[str, float | None]) -> None:
    """Print whether each speed target holds: ours never slower than naive, and >= 15x at 64^2 r=16."""
    measured = {label: s for label, s in speedups.items() if s is not None}
    slower = [f"{label} ({s:.2f}x)" for label, s in measured.items() if s < 1]
    print(f"\ntarget ours >= naive at every measured row ({len(measured)} rows): "
          + ("holds" if not slower else "FAILS at " + ", ".join(slower)))
    key = "64^2 r16"
    if key in measured:
        print(f"target >= {TARGET_64}x at {key}: {'holds' if measured[key] >= TARGET_64 else 'FAILS'}"
              f" ({measured[key]:.1f}x)")


@contextmanager
def contention(enabled: bool) -> Iterator[None]:
    """While enabled, one busy process of our own spins on a core; it is always stopped after.

    This is the situation a DataLoader worker or a sweep beside the job creates, and the one in which the FFT
    path once ran 9-36x slower (docs/large_kernel.md). The child also exits by itself once this process is gone
    (its parent changes), so even a killed benchmark leaves nothing spinning.
    """
    if not enabled:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", f"import os\nwhile os.getppid() == {os.getpid()}: pass"])
    print(f"contended: busy process {busy.pid} spinning for the whole measurement")
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def _fit(rows: list[tuple[float, float]]) -> tuple[float, float]:
    """``t ≈ a·work + c`` minimising relative error; ``c`` clamped at 0."""
    work, seconds = np.array(rows).T
    (a, c), *_ = np.linalg.lstsq(np.stack([work / seconds, 1 / seconds], 1), np.ones_like(work), rcond=None)
    if c < 0:
        a, c = float(np.sum(work / seconds) / np.sum((work / seconds) ** 2)), 0.0
    return float(a), float(c)


def calibrate(device: torch.device, repeats: int, modes: tuple[str, ...]) -> None:
    """Time ``modes`` over 2D/3D shapes (direct skipped above ~1.5 s) and fit their cost constants.

    The constants describe an idle machine, and the selection margin (``_FFT_MARGIN``) covers the rest. So the fit
    uses the fastest of the timed runs, the least disturbed by other jobs on a shared CPU, and on a CPU it times
    fft, which runs on the calling thread only, by that thread's CPU time: its wall time on an idle machine, which
    a shared one cannot give (the handful of ``.sum().backward()`` ops outside the fft path are not counted on the
    other thread). One formulation can be refitted alone, e.g. after a change to its code.
    """
    shapes = [((2, 16, n, n), (k, k)) for n in (8, 16, 32, 64, 96) for k in (3, 5, 9, 17, 33, 51)]
    shapes += [((1, 8, n, n, n), (k, k, k)) for n in (8, 16, 24) for k in (3, 5, 9, 17)]
    shapes += [((2, 8, n, n, n), (k, 1, 1)) for n in (16, 32, 48) for k in (3, 9, 25, 51)]
    rows = {mode: [] for mode in modes}
    print(f"{'shape':>22} {'kernel':>14} {'direct ms':>10} {'fft ms':>8}  (fastest of {repeats} runs)")
    for shape, kernel in shapes:
        spatial = shape[2:]
        kernel = tuple(min(k, 2 * n - 1) for k, n in zip(kernel, spatial, strict=False))
        x, w, b = _tensors(shape, kernel, device)
        axes, lengths = _fft_lengths(kernel, spatial)
        size = math.prod(lengths)
        signals = shape[0] * shape[1] * math.prod(n for a, n in enumerate(spatial) if a not in axes) + shape[1]
        work = {"direct": math.prod(shape) * math.prod(kernel), "fft": signals * size * math.log2(size)}
        seconds = {}
        for mode in modes:
            if mode == "fft" or _predicted_naive(shape, kernel, device) < 1.5:
                clock = time.thread_time if mode == "fft" and device.type == "cpu" else time.perf_counter
                _, seconds[mode] = time_fwd_bwd(
                    lambda x=x, w=w, b=b, mode=mode: depthwise_conv(x, w, b, mode), device, repeats, clock
                )
                rows[mode].append((work[mode], seconds[mode]))
        print(f"{str(shape):>22} {str(kernel):>14} {_fmt_ms(seconds.get('direct')):>10}"
              f" {_fmt_ms(seconds.get('fft')):>8}")
    units = {"direct": "s/MAC", "fft": "s/(n log2 n)"}
    fits = [f"{mode} {a:.3e} {units[mode]} + overhead {c:.2e} s" for mode in modes for a, c in [_fit(rows[mode])]]
    print(f"\nfitted for {device.type}: " + ", ".join(fits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    parser.add_argument("--quick", action="store_true", help="a few shapes only (smoke test)")
    parser.add_argument(
        "--calibrate", nargs="?", const="both", choices=("both", "direct", "fft"),
        help="fit the cost-model constants instead (of both formulations, or of one)",
    )
    parser.add_argument("--naive-limit", type=float, default=30.0, help="skip naive runs predicted above this (s)")
    parser.add_argument("--contended", action="store_true", help="run one busy process of our own meanwhile")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} at the start")
    with contention(args.contended):
        if args.calibrate:
            calibrate(device, args.repeats, ("direct", "fft") if args.calibrate == "both" else (args.calibrate,))
            return
        speedups = table_2d(device, args.repeats, args.quick)
        speedups |= table_3d(device, args.repeats, args.quick, args.naive_limit)
    check_targets(speedups)


if __name__ == "__main__":
    main()
