"""Exact depthwise convolution with large kernels (the DKA/LKA 51×51 branch), picking the fastest formulation.

A naive ``F.conv2d(..., groups=C)`` with a 51×51 kernel spends ``numel · 2601`` multiply-adds per pass and takes
0.4–5.7 s forward+backward at DKA shapes on a 2-core CPU, which dominates adapter training. Three formulations
compute the same numbers, so the cheapest one for the shape is used:

* **crop** (always applied first): with 'same' zero padding, output ``i`` reads input ``i + j - k//2`` for tap
  ``j``; a map of size ``N`` only has inputs at offsets ``-(N-1) .. N-1`` from any output, so taps further than
  ``N - 1`` from the kernel centre only ever multiply padding zeros. Cropping the kernel to ``2N - 1`` along such
  an axis is therefore exact, and autograd gives the cropped-away taps the zero gradient they truly have.
* **direct**: ``F.conv{1,2,3}d`` with ``groups=C`` and ``padding=k//2`` on the cropped kernel.
* **fft**: zero-pad input and flipped kernel to ``L >= N + k - 1`` (so the circular convolution has no
  wrap-around and equals the linear one), multiply their real FFTs, invert, and keep the ``N`` outputs starting
  at ``k//2``. Flipping turns PyTorch's cross-correlation into the convolution the FFT computes. Axes whose
  (cropped) kernel is 1 are not transformed at all: there the kernel is a per-channel scale that broadcasts,
  which keeps decomposed ``(k, 1, 1)`` kernels a 1D FFT.

On a CPU the fft path runs its forward *and* backward on one intra-op thread (``torch.set_num_threads(1)`` for
its duration, the caller's setting restored after). The reason is contention, not arithmetic: forward+backward is
some 40 small ATen/MKL ops, each an OpenMP parallel region, and libgomp's default wait policy makes a thread that
waits at a region's barrier, or between regions, spin on its core. When another process holds one of the cores
(a DataLoader worker, a sweep beside the job), the spinning thread burns the time slice its descheduled partner
needs, so every region waits for the scheduler (milliseconds) instead of microseconds. Measured on a 2-core CPU
at batch 4, 64²·r16 (``docs/large_kernel.md``): 735 ms with 2 threads vs 70 ms with 1 (load average 4), and
70 ms with 2 threads under ``OMP_WAIT_POLICY=PASSIVE``, which pins the cause on the spinning; that variable is
read once at start-up, so a library cannot set it. Direct is a few long ops that amortise the wait, so it keeps
the caller's threads and stays what naive ``F.conv2d`` is, on a cropped kernel.

``mode="auto"`` picks by a cost model whose constants were fitted per device type with
``python -m benchmarks.large_kernel --calibrate`` (see ``docs/large_kernel.md``), and takes fft only when it is
predicted :data:`_FFT_MARGIN` times cheaper: direct is never slower than naive, so near the crossover, where the
fit's error decides, it is the safe side. The choice depends only on the shapes, dtype and device type, so it is
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import nn
from torch.autograd.function import once_differentiable

from pipeline.errors import PipelineError

__all__ = ["DecomposedDepthwiseConv3d", "DepthwiseConv", "depthwise_conv", "select_mode"]

MODES = ("auto", "direct", "fft")

# Seconds per unit of work, forward+backward, fitted by ``python -m benchmarks.large_kernel --calibrate``.
# direct: per multiply-add (batch · channels · map voxels · kernel taps) of the depthwise convolution plus a
# fixed per-call overhead; fft: per ``n log2 n`` of each transformed signal (batch · channels input signals plus
# channels kernel signals) plus a fixed per-call overhead. On the CPU, direct runs on the caller's threads and fft
# on one (module docstring). Other device types (mps, xpu) use the CPU numbers.
_COSTS = {
    "cpu": {"direct": 8.3e-10, "direct_overhead": 4.7e-4, "fft": 2.5e-9, "fft_overhead": 1.1e-3},
    "cuda": {"direct": 2.3e-12, "direct_overhead": 4.4e-4, "fft": 5.2e-12, "fft_overhead": 1.6e-3},
}

# How many times cheaper fft must be predicted to be chosen over direct (see the module docstring).
_FFT_MARGIN = 2.0

_OPENMP = "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise PipelineError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _check_kernel(kernel: Sequence[int]) -> None:
    for size in kernel:
        if size <= 0 or size % 2 == 0:
            raise PipelineError(f"kernel_size must be odd and positive, got {size} in {tuple(kernel)}")


def _cropped_kernel(kernel: Sequence[int], spatial: Sequence[int]) -> tuple[int, ...]:
    """Largest kernel that still touches the map: taps beyond ``N - 1`` from the centre only see padding."""
    return tuple(min(k, 2 * n - 1) for k, n in zip(kernel, spatial, strict=False))


def _fft_lengths(kernel: Sequence[int], spatial: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Transformed axes (kernel > 1) and their padded lengths, long enough for a linear convolution."""
    axes = tuple(a for a, k in enumerate(kernel) if k > 1)
    return axes, tuple(next_fast_len(spatial[a] + kernel[a] - 1, real=True) for a in axes)


def select_mode(
    x_shape: Sequence[int], kernel_size: Sequence[int], device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> str:
    """The formulation ``mode="auto"`` uses for input ``x_shape`` ``(B, C, *spatial)`` and this kernel.

    Direct costs ``B·C·prod(N)·prod(k)`` multiply-adds, FFT ``n log2 n`` per transformed signal, with ``n`` the
    padded transform size and ``B·C·prod(untransformed N) + C`` signals; each adds a fixed per-call overhead. FFT
    must be predicted :data:`_FFT_MARGIN` times cheaper to be chosen (the module docstring says why). Half
    precision inputs use direct, because their FFT would be computed in float32 anyway.
    """
    batch, channels, *spatial = x_shape
    kernel = _cropped_kernel(kernel_size, spatial)
    if math.prod(kernel) == 1 or dtype not in (torch.float32, torch.float64):
        return "direct"
    costs = _COSTS.get(torch.device(device).type, _COSTS["cpu"])
    direct = costs["direct"] * batch * channels * math.prod(spatial) * math.prod(kernel) + costs["direct_overhead"]
    axes, lengths = _fft_lengths(kernel, spatial)
    size = math.prod(lengths)
    plain = math.prod(n for a, n in enumerate(spatial) if a not in axes)
    signals = batch * channels * plain + channels
    fft = costs["fft"] * signals * size * math.log2(size) + costs["fft_overhead"]
    return "fft" if fft * _FFT_MARGIN < direct else "direct"


def _fft_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """'Same' cross-correlation by zero-padded real FFTs over the axes whose kernel is longer than 1, plus bias."""
    spatial = x.shape[2:]
    kernel = weight.shape[2:]
    axes, lengths = _fft_lengths(kernel, spatial)
    dims = tuple(2 + a for a in axes)
    compute = torch.promote_types(x.dtype, torch.float32)
    kernel_map = torch.flip(weight[:, 0].to(compute), dims=tuple(d - 1 for d in dims))
    product = torch.fft.rfftn(x.to(compute), s=lengths, dim=dims) * torch.fft.rfftn(
        kernel_map, s=lengths, dim=tuple(d - 1 for d in dims)
    )
    full = torch.fft.irfftn(product, s=lengths, dim=dims)
    for a, d in zip(axes, dims, strict=False):
        full = full.narrow(d, kernel[a] // 2, spatial[a])
    out = full.to(x.dtype)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * len(spatial))).to(out.dtype)
    return out


@contextmanager
def _one_intra_op_thread(device: torch.device) -> Iterator[None]:
    """Run CPU work inside on one intra-op thread, restoring the caller's setting after (also on error).

    Only for ATen's OpenMP backend, whose spinning workers are the problem (module docstring); the native thread
    pool cannot be resized once used, and other devices do not run the FFT on CPU threads.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1 or not _OPENMP:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _SingleThreadedFFT(torch.autograd.Function):
    """:func:`_fft_conv` with its forward *and* backward under :func:`_one_intra_op_thread`.

    The backward runs after ``depthwise_conv`` has returned, so a ``with`` block around the call would not cover
    it: the forward records autograd's own graph of :func:`_fft_conv` on detached inputs, and the backward
    differentiates that graph under the same setting (so gradients are exactly autograd's). Like any graph, it
    can be differentiated once; double backward is not supported.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.inputs = tuple(
            None if t is None else t.detach().requires_grad_(needed)
            for t, needed in zip((x, weight, bias), ctx.needs_input_grad, strict=False)
        )
        with torch.enable_grad(), _one_intra_op_thread(x.device):
            ctx.out = _fft_conv(*ctx.inputs)
        return ctx.out.detach()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        wanted = [t for t in ctx.inputs if t is not None and t.requires_grad]
        with _one_intra_op_thread(grad.device):
            grads = iter(torch.autograd.grad(ctx.out, wanted, grad))
        return tuple(next(grads) if t is not None and t.requires_grad else None for t in ctx.inputs)


def depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, mode: str = "auto"
) -> torch.Tensor:
    """``F.conv{n}d(x, weight, bias, padding=k//2, groups=C)`` for odd kernels, computed the cheapest exact way.

    ``x`` is ``(B, C, *spatial)``, ``weight`` ``(C, 1, *kernel)`` with odd sizes, ``bias`` ``(C,)`` or ``None``;
    the output has the shape of ``x``. ``mode`` forces ``"direct"`` or ``"fft"``; ``"auto"`` asks
    :func:`select_mode`. The kernel is cropped to ``2N - 1`` per axis first in every mode (exact, see the module
    docstring).
    """
    _check_mode(mode)
    spatial_dims = weight.dim() - 2
    if spatial_dims not in _CONV:
        raise PipelineError(f"weight must be (C, 1, *kernel) with 1-3 kernel dims, got shape {tuple(weight.shape)}")
    channels = weight.shape[0]
    if x.dim() != spatial_dims + 2 or x.shape[1] != channels or weight.shape[1] != 1:
        raise PipelineError(
            f"x must be (B, {channels}, <{spatial_dims} spatial dims>) for a depthwise weight of shape "
            f"{tuple(weight.shape)}, got x of shape {tuple(x.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise PipelineError(f"bias must have shape ({channels},), got {tuple(bias.shape)}")
    _check_kernel(weight.shape[2:])
    spatial = tuple(x.shape[2:])
    kernel = _cropped_kernel(weight.shape[2:], spatial)
    if kernel != tuple(weight.shape[2:]):
        slices = tuple(
            slice(k // 2 - c // 2, k // 2 + c // 2 + 1) for k, c in zip(weight.shape[2:], kernel, strict=False)
        )
        weight = weight[(slice(None), slice(None), *slices)]
    if mode == "auto":
        mode = select_mode(x.shape, kernel, x.device, x.dtype)
    if mode == "direct" or math.prod(kernel) == 1:
        return _CONV[spatial_dims](x, weight, bias, padding=[k // 2 for k in kernel], groups=channels)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _SingleThreadedFFT.apply(x, weight, bias)
    with _one_intra_op_thread(x.device):
        return _fft_conv(x, weight, bias)


class DepthwiseConv(nn.Module):
    """Depthwise 'same' convolution with an odd (possibly very large) kernel, via :func:`depthwise_conv`.

    Parameters match ``nn.Conv{n}d(C, C, k, groups=C, padding=k//2)`` in name, shape and default
    initialisation, so checkpoints and parameter counts (``C·prod(k) + C``) are interchangeable with it.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | Sequence[int],
        spatial_dims: int = 2,
        bias: bool = True,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise PipelineError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if channels <= 0:
            raise PipelineError(f"channels must be positive, got {channels}")
        kernel = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(kernel) != spatial_dims:
            raise PipelineError(
                f"kernel_size must have {spatial_dims} sizes for spatial_dims={spatial_dims}, got {kernel_size}"
            )
        _check_kernel(kernel)
        _check_mode(mode)
        self.channels = channels
        self.kernel_size = kernel
        self.spatial_dims = spatial_dims
        self.mode = mode
        self.weight = nn.Parameter(torch.empty(channels, 1, *kernel))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's ``nn.Conv{n}d`` default: Kaiming-uniform(a=√5) weight, bias uniform in ±1/√fan_in."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(math.prod(self.kernel_size))
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depthwise_conv(x, self.weight, self.bias, self.mode)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, spatial_dims={self.spatial_dims}, "
            f"bias={self.bias is not None}, mode={self.mode!r}"
        )


class DecomposedDepthwiseConv3d(nn.Module):
    """A 3D large kernel as three axial depthwise convolutions ``(k,1,1) → (1,k,1) → (1,1,k)``.

    A full ``k³`` kernel has ``k³`` taps per channel (132 651 at k=51) and, even cropped and via FFT, costs far
    more than three 1D passes; the decomposition keeps the ``k``-voxel receptive field per axis at ``3·C·k + 3·C``
    parameters. Each pass is a :class:`DepthwiseConv`, so each picks its own fastest formulation.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, mode: str = "auto") -> None:
        super().__init__()
        if not isinstance(kernel_size, int):
            raise PipelineError(f"kernel_size must be a single odd integer, got {kernel_size!r}")
        self.axes = nn.ModuleList(
            DepthwiseConv(channels, tuple(kernel_size if a == b else 1 for b in range(3)), 3, bias, mode)
            for a in range(3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.axes:
            x = conv(x)
        return x
