"""Every formulation of the large-kernel depthwise convolution equals PyTorch's grouped convolution.

Synthetic random tensors. Exactness is checked in float64 at a tight tolerance (so a wrong crop, flip or
padding cannot hide inside rounding) and in float32 at 1e-4 relative to the output's scale. Gradients for the
input, weight and bias are compared as well as outputs, in every mode, including maps smaller than the kernel
(where the kernel is cropped), non-square maps, anisotropic kernels and batch > 1.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.peft import large_kernel
from pipeline.peft.large_kernel import DecomposedDepthwiseConv3d, DepthwiseConv, depthwise_conv, select_mode

MODES = ("direct", "fft", "auto")

CASES = [
    pytest.param((2, 3, 16, 16), (51, 51), id="2d-map-smaller-than-kernel"),
    pytest.param((3, 4, 20, 37), (51, 51), id="2d-non-square-partial-crop"),
    pytest.param((2, 3, 24, 18), (5, 31), id="2d-anisotropic"),
    pytest.param((1, 2, 32, 32), (3, 3), id="2d-small-kernel"),
    pytest.param((2, 2, 5, 7, 4), (15, 15, 15), id="3d-full-kernel-cropped"),
    pytest.param((2, 3, 12, 10, 14), (51, 1, 1), id="3d-axial-depth"),
    pytest.param((1, 2, 8, 11, 9), (3, 7, 5), id="3d-anisotropic"),
]


def _reference(x, w, b):
    conv = {4: F.conv2d, 5: F.conv3d}[x.dim()]
    return conv(x, w, b, padding=[k // 2 for k in w.shape[2:]], groups=w.shape[0])


def _inputs(shape, kernel, dtype):
    channels = shape[1]
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    w = (torch.randn(channels, 1, *kernel, dtype=dtype) / math.sqrt(math.prod(kernel))).requires_grad_()
    b = torch.randn(channels, dtype=dtype, requires_grad=True)
    return x, w, b


def _value_and_grads(fn, x, w, b, seed_grad):
    out = fn(x, w, b)
    grads = torch.autograd.grad(out, (x, w, b), seed_grad)
    return (out.detach(), *grads)


def _assert_all_close(ours, reference, tolerance, mode):
    for name, a, r in zip(("output", "grad x", "grad weight", "grad bias"), ours, reference, strict=False):
        assert a.shape == r.shape, f"{mode} {name}"
        scale = max(r.abs().max().item(), 1.0)
        error = (a - r).abs().max().item()
        assert error <= tolerance * scale, f"{mode} {name}: max error {error:.3g} at scale {scale:.3g}"


def _check_every_mode(shape, kernel, dtype, tolerance, device="cpu"):
    x, w, b = (t.detach().to(device).requires_grad_() for t in _inputs(shape, kernel, dtype))
    seed_grad = torch.randn(shape, dtype=dtype, device=device)
    reference = _value_and_grads(_reference, x, w, b, seed_grad)
    for mode in MODES:
        ours = _value_and_grads(lambda *a, mode=mode: depthwise_conv(*a, mode=mode), x, w, b, seed_grad)
        _assert_all_close(ours, reference, tolerance, mode)


@pytest.mark.parametrize("shape, kernel", CASES)
def test_float64_equals_grouped_conv(shape, kernel):
    _check_every_mode(shape, kernel, torch.float64, 1e-10)


@pytest.mark.parametrize(
    "shape, kernel",
    [
        pytest.param((4, 16, 64, 64), (51, 51), id="2d-dka-shape"),
        pytest.param((2, 4, 16, 24), (51, 51), id="2d-cropped"),
        pytest.param((2, 3, 6, 8, 5), (21, 21, 21), id="3d-cropped"),
    ],
)
def test_float32_within_1e4(shape, kernel):
    _check_every_mode(shape, kernel, torch.float32, 1e-4)


def test_cropped_taps_get_zero_gradient():
    x, w, b = _inputs((1, 2, 8, 8), (51, 51), torch.float64)
    depthwise_conv(x, w, b, mode="fft").sum().backward()
    reachable = (slice(None), slice(None), slice(25 - 7, 25 + 8), slice(25 - 7, 25 + 8))
    assert w.grad[reachable].abs().min() > 0
    outer = w.grad.clone()
    outer[reachable] = 0
    assert outer.abs().max() == 0


def test_no_bias():
    x, w, _ = _inputs((2, 3, 20, 20), (51, 51), torch.float64)
    for mode in MODES:
        torch.testing.assert_close(depthwise_conv(x, w, None, mode), _reference(x, w, None), atol=1e-10, rtol=0)


def test_auto_mode_is_deterministic_and_prefers_fft_for_large_kernels():
    assert select_mode((4, 16, 64, 64), (51, 51), "cpu") == "fft"
    assert select_mode((4, 16, 64, 64), (51, 51), "cpu") == select_mode((4, 16, 64, 64), (51, 51), "cpu")
    assert select_mode((1, 2, 32, 32), (3, 3), "cpu") == "direct"
    assert select_mode((4, 16, 64, 64), (51, 51), "cpu", torch.float16) == "direct"


@pytest.mark.parametrize(
    "shape, kernel",
    [
        pytest.param((4, 8, 16, 16), (51, 51), id="2d-16x16-r8"),
        pytest.param((4, 16, 48, 48, 48), (51, 1, 1), id="3d-axial-48"),
    ],
)
def test_auto_takes_fft_only_with_a_margin(monkeypatch, shape, kernel):
    """Shapes where fft is predicted cheaper, but by less than the margin, go direct: naive on a cropped kernel.

    Without the margin (the old rule, and what made the calibrated model pick fft here) they would be fft.
    """
    assert select_mode(shape, kernel, "cpu") == "direct"
    monkeypatch.setattr(large_kernel, "_FFT_MARGIN", 1.0)
    assert select_mode(shape, kernel, "cpu") == "fft"


@pytest.fixture
def two_threads():
    """The caller's setting is 2 intra-op threads (this machine's default), restored after the test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


needs_openmp = pytest.mark.skipif(not large_kernel._OPENMP, reason="the thread guard is for ATen's OpenMP backend")


@needs_openmp
def test_fft_forward_and_backward_run_on_one_thread_and_restore_the_callers(monkeypatch, two_threads):
    seen = []
    fft_conv = large_kernel._fft_conv

    def spy(*args):
        seen.append(("forward", torch.get_num_threads()))
        out = fft_conv(*args)
        out.register_hook(lambda grad: seen.append(("backward", torch.get_num_threads())))
        return out

    monkeypatch.setattr(large_kernel, "_fft_conv", spy)
    x, w, b = _inputs((2, 3, 16, 16), (51, 51), torch.float64)
    out = depthwise_conv(x, w, b, mode="fft")
    assert torch.get_num_threads() == 2
    out.sum().backward()
    assert torch.get_num_threads() == 2
    assert seen == [("forward", 1), ("backward", 1)]
    assert x.grad is not None and w.grad is not None and b.grad is not None


@needs_openmp
def test_direct_keeps_the_callers_threads(monkeypatch, two_threads):
    seen = []
    conv2d = large_kernel._CONV[2]
    monkeypatch.setitem(large_kernel._CONV, 2, lambda *a, **k: seen.append(torch.get_num_threads()) or conv2d(*a, **k))
    x, w, b = _inputs((2, 3, 16, 16), (51, 51), torch.float64)
    depthwise_conv(x, w, b, mode="direct")
    assert seen == [2]


@needs_openmp
def test_thread_setting_is_restored_when_the_fft_path_fails(monkeypatch, two_threads):
    def fail(*args):
        raise RuntimeError("failed inside the fft path")

    monkeypatch.setattr(large_kernel, "_fft_conv", fail)
    x, w, b = _inputs((1, 2, 16, 16), (51, 51), torch.float32)
    with pytest.raises(RuntimeError, match="failed inside"):
        depthwise_conv(x, w, b, mode="fft")
    assert torch.get_num_threads() == 2


def test_fft_under_no_grad_records_no_graph_and_is_exact(monkeypatch):
    recording = []
    fft_conv = large_kernel._fft_conv
    monkeypatch.setattr(large_kernel, "_fft_conv", lambda *a: recording.append(torch.is_grad_enabled()) or fft_conv(*a))
    x, w, b = _inputs((1, 2, 16, 16), (51, 51), torch.float64)
    with torch.no_grad():
        out = depthwise_conv(x, w, b, mode="fft")
    depthwise_conv(x, w, b, mode="fft")
    assert recording == [False, True]
    assert out.grad_fn is None
    torch.testing.assert_close(out, _reference(x, w, b).detach(), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spatial_dims, conv", [(2, nn.Conv2d), (3, nn.Conv3d)])
def test_module_matches_nn_conv_init_and_output(spatial_dims, conv):
    kernel = (51, 51) if spatial_dims == 2 else (7, 5, 3)
    torch.manual_seed(1)
    ours = DepthwiseConv(6, kernel, spatial_dims)
    torch.manual_seed(1)
    theirs = conv(6, 6, kernel, groups=6, padding=[k // 2 for k in kernel])
    assert dict(ours.named_parameters()).keys() == {"weight", "bias"}
    torch.testing.assert_close(ours.weight, theirs.weight, atol=0, rtol=0)
    torch.testing.assert_close(ours.bias, theirs.bias, atol=0, rtol=0)
    assert sum(p.numel() for p in ours.parameters()) == 6 * math.prod(kernel) + 6
    x = torch.randn(2, 6, *([12] * spatial_dims))
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_module_int_kernel_and_no_bias():
    module = DepthwiseConv(4, 51, spatial_dims=2, bias=False, mode="fft")
    assert module.weight.shape == (4, 1, 51, 51)
    assert module.bias is None
    assert sum(p.numel() for p in module.parameters()) == 4 * 51 * 51


def test_decomposed_3d_equals_three_sequential_conv3d():
    module = DecomposedDepthwiseConv3d(3, 51).double()
    assert sum(p.numel() for p in module.parameters()) == 3 * 3 * 51 + 3 * 3
    kernels = [tuple(conv.weight.shape[2:]) for conv in module.axes]
    assert kernels == [(51, 1, 1), (1, 51, 1), (1, 1, 51)]
    x = torch.randn(2, 3, 14, 9, 11, dtype=torch.float64, requires_grad=True)
    ours = module(x)
    reference = x
    for conv in module.axes:
        reference = _reference(reference, conv.weight, conv.bias)
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=0)
    seed_grad = torch.randn_like(ours)
    params = [x, *module.parameters()]
    for a, r in zip(
        torch.autograd.grad(ours, params, seed_grad), torch.autograd.grad(reference, params, seed_grad), strict=False
    ):
        torch.testing.assert_close(a, r, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 0, "kernel_size": 5}, "channels must be positive"),
        ({"channels": 4, "kernel_size": 50}, "kernel_size must be odd and positive, got 50"),
        ({"channels": 4, "kernel_size": -3}, "kernel_size must be odd and positive"),
        ({"channels": 4, "kernel_size": (5, 5, 5)}, "kernel_size must have 2 sizes"),
        ({"channels": 4, "kernel_size": 5, "mode": "winograd"}, "mode must be one of"),
        ({"channels": 4, "kernel_size": 5, "spatial_dims": 4}, "spatial_dims must be 1, 2 or 3"),
    ],
)
def test_module_bad_arguments(kwargs, message):
    with pytest.raises(PipelineError, match=message):
        DepthwiseConv(**kwargs)


def test_decomposed_bad_arguments():
    with pytest.raises(PipelineError, match="kernel_size must be odd"):
        DecomposedDepthwiseConv3d(4, 50)
    with pytest.raises(PipelineError, match="single odd integer"):
        DecomposedDepthwiseConv3d(4, (5, 5, 5))


def test_function_bad_arguments():
    x = torch.randn(1, 4, 8, 8)
    with pytest.raises(PipelineError, match="mode must be one of"):
        depthwise_conv(x, torch.randn(4, 1, 5, 5), mode="fast")
    with pytest.raises(PipelineError, match="odd and positive, got 4"):
        depthwise_conv(x, torch.randn(4, 1, 5, 4))
    with pytest.raises(PipelineError, match="x must be"):
        depthwise_conv(x, torch.randn(3, 1, 5, 5))
    with pytest.raises(PipelineError, match="bias must have shape"):
        depthwise_conv(x, torch.randn(4, 1, 5, 5), torch.randn(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "shape, kernel, dtype, tolerance",
    [
        ((2, 4, 16, 40), (51, 51), torch.float64, 1e-10),
        ((2, 3, 10, 12, 8), (51, 1, 1), torch.float64, 1e-10),
        ((4, 16, 64, 64), (51, 51), torch.float32, 1e-4),
    ],
)
def test_cuda_equals_grouped_conv(shape, kernel, dtype, tolerance):
    _check_every_mode(shape, kernel, dtype, tolerance, "cuda")
