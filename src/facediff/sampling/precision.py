"""bf16 autocast where it pays on THIS machine: the kernel probe (shared with training's ``"auto"``) and the
sampling side of it.

Whether bf16 pays depends on the CPU, not on the code. On a CPU with AVX512-BF16 (measured 2026-12-04, AMD
EPYC, one thread) the default 32 px U-Net's forward ran 1.7x faster under bf16 autocast (120 vs 71
image-steps/s at batch 64); on an AVX2-only EPYC the same kernels ran 10-16x SLOWER. So "auto" measures a
small convolution + matmul in both precisions once per process and takes bf16 only where it wins.

Sampling keeps fp32 unless asked (``precision="auto"`` or ``"bf16"``): bf16 changes the images a little, and
fp32 is what makes a seed give the same face on every machine and what matches diffusers' own pipelines.
The sampler's update always runs in fp32; only the network call is autocast.
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable

import torch

from facediff.errors import FacediffError
from facediff.registry import SAMPLING_PRECISION, check_choice

AUTO_MARGIN = 1.1  # "auto" takes bf16 only if the probe measures it at least this much faster


def autocast(mixed_precision: str, device: torch.device):
    """torch.autocast for bf16 / fp16 (the network in low precision, losses in fp32), else a no-op."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def best_ms(fn: Callable[[], None], repeats: int) -> float:
    """Best of ``repeats`` timed calls after one warm-up (allocator, oneDNN primitive creation), in ms."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


@functools.lru_cache(maxsize=None)
def kernel_probe(repeats: int = 2, backward: bool = True) -> tuple[float, float]:
    """(fp32 ms, bf16 ms) of a (16, 64, 16, 16) 3x3 conv plus a 256^3 matmul, forward (+ backward), on the CPU.

    Sized like a small U-Net's layers: a smaller probe (4 x 32 channels, 128^3; 0.7 ms) read 0.74x-1.14x on
    the AVX512-BF16 EPYC where the real U-Net step gains 1.5x, and the 1.0 threshold flipped with the noise.
    This one reads 2.1x there (about 12 ms per call)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 16, 16, generator=gen)
    w = torch.randn(64, 64, 3, 3, generator=gen, requires_grad=True)
    a = torch.randn(256, 256, generator=gen)
    b = torch.randn(256, 256, generator=gen, requires_grad=True)

    def run(mp: str) -> Callable[[], None]:
        def step() -> None:
            with torch.enable_grad(), autocast(mp, torch.device("cpu")):  # also when called under no_grad
                y = torch.nn.functional.conv2d(x, w, padding=1).float().sum() + (a @ b).float().sum()
            if backward:
                y.backward()
                w.grad = b.grad = None
        return step

    return best_ms(run("no"), repeats), best_ms(run("bf16"), repeats)


def sampling_precision(requested: str, device: torch.device | str) -> tuple[str, str]:
    """``requested`` (no | bf16 | auto) -> (chosen: no | bf16, one-line reason) on ``device``."""
    check_choice("precision", requested, SAMPLING_PRECISION)
    device = torch.device(device)
    if requested == "no":
        return "no", "fp32 (as asked)"
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not ok:
            raise FacediffError("precision = 'bf16': this GPU has no bf16; use 'auto' or 'no'")
        return ("bf16", "bf16: this GPU supports it") if ok else ("no", "fp32: this GPU has no bf16")
    if device.type != "cpu":
        return ("bf16", "bf16 (as asked)") if requested == "bf16" else ("no", f"fp32 on {device.type}")
    fp32_ms, bf16_ms = kernel_probe(backward=False)
    gain = fp32_ms / bf16_ms
    if requested == "bf16":
        return "bf16", ("bf16 (as asked)" if gain >= 1 / 1.2 else
                        f"bf16 (as asked), though measured {1 / gain:.1f}x slower than fp32 on this CPU")
    if gain >= AUTO_MARGIN:
        return "bf16", f"bf16: kernels measured {gain:.2f}x faster than fp32 on this CPU"
    return "no", f"fp32: bf16 kernels measured {gain:.2f}x the speed of fp32 on this CPU"


def autocast_model(model_fn: Callable[..., torch.Tensor], mixed_precision: str,
                   device: torch.device | str) -> Callable[..., torch.Tensor]:
    """``model_fn`` with its call under ``autocast(mixed_precision)`` and its output back in fp32."""
    if mixed_precision == "no":
        return model_fn
    device = torch.device(device)

    def call(x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        with autocast(mixed_precision, device):
            return model_fn(x, t, **cond).float()
    return call
