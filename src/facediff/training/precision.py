"""``[train] mixed_precision = "auto"``: pick bf16 only where it is measurably faster on THIS machine.

Whether bf16 autocast pays depends on the CPU, not on the code: on an AMD EPYC with AVX512-BF16 the default
U-Net trained at 37.1 img/s with "auto" (it picked bf16: "the model's step measured 1.55x faster") against
26.1 in fp32 (2026-12-04, batch 32, 32 px, one thread); on an AVX2-only AMD EPYC the same network trained
at 0.89 img/s in bf16 against 14.5 img/s in fp32 (batch 32, 32 px, one thread; 16x SLOWER), because bf16
convolutions fall back to slow reference kernels. So nothing is assumed: at run start

1. a kernel probe (``sampling.precision.kernel_probe``) times a 3x3 convolution (forward + backward) and a
   matmul in fp32 and in bf16 autocast (best of a few; well under a second, once per process). If bf16 is slower, fp32 it is.
2. otherwise a model probe times ``repeats`` forward/backward passes of the ACTUAL task (its first micro-batch,
   gradients thrown away) in each precision, and bf16 is chosen only if it is at least ``margin`` faster.

On CUDA, "auto" is bf16 where the GPU supports it, else fp32. An explicit "bf16" on a CPU where the kernel
probe measures it slower is kept (the user asked) but warned about, with the measured factor.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from facediff.sampling.precision import best_ms, kernel_probe  # the probe is shared with sampling


@dataclass
class PrecisionChoice:
    requested: str  # [train] mixed_precision as configured (auto | no | bf16 | fp16)
    chosen: str  # what the run uses (no | bf16 | fp16)
    reason: str  # one sentence for the summary and the progress line
    probe_ms: dict[str, float] = field(default_factory=dict)  # measured times (ms), by probe and precision
    warning: bool = False  # the configured precision is measured slower than fp32 here (shown to the user)

    def as_dict(self) -> dict:
        return asdict(self)


def model_probe(step: Callable[[str], None], repeats: int = 2) -> dict[str, float]:
    """ms per forward/backward of the task, by precision (``step(mixed_precision)`` runs one)."""
    return {mp: best_ms(functools.partial(step, mp), repeats) for mp in ("no", "bf16")}


def choose_precision(requested: str, device: torch.device, step: Callable[[str], None] | None = None, *,
                     margin: float = 1.1, repeats: int = 2) -> PrecisionChoice:
    """Resolve ``requested`` for this machine (see the module docstring); ``step`` runs one forward/backward
    of the actual task in the given precision (used by the model probe of "auto")."""
    if device.type == "cuda":
        if requested != "auto":
            return PrecisionChoice(requested, requested, "as configured")
        ok = torch.cuda.is_bf16_supported()
        return PrecisionChoice("auto", "bf16" if ok else "no",
                               "this GPU supports bf16" if ok else "this GPU has no bf16: fp32")
    if requested in ("no", "fp16"):  # fp16 on CPU is rejected by check_precision before this
        return PrecisionChoice(requested, requested, "as configured")
    fp32_ms, bf16_ms = kernel_probe()
    probes = {"kernel_fp32": round(fp32_ms, 3), "kernel_bf16": round(bf16_ms, 3)}
    slow = bf16_ms / fp32_ms
    if requested == "bf16":
        if slow > 1.2:
            msg = (f"[train] mixed_precision = 'bf16': on this CPU bf16 convolutions run {slow:.1f}x slower than "
                   "fp32 (measured; no AVX512-BF16/AMX?); 'auto' or 'no' trains faster")
            return PrecisionChoice("bf16", "bf16", msg, probes, warning=True)
        return PrecisionChoice("bf16", "bf16", "as configured", probes)
    if slow >= 1.0:
        return PrecisionChoice("auto", "no", f"fp32: bf16 kernels measured {slow:.1f}x slower on this CPU", probes)
    if step is None:
        return PrecisionChoice("auto", "bf16", f"bf16: kernels measured {1 / slow:.2f}x faster on this CPU", probes)
    timed = model_probe(step, repeats)
    probes.update({f"model_{k if k != 'no' else 'fp32'}": round(v, 3) for k, v in timed.items()})
    gain = timed["no"] / timed["bf16"]
    if gain >= margin:
        return PrecisionChoice("auto", "bf16", f"bf16: the model's step measured {gain:.2f}x faster than fp32", probes)
    return PrecisionChoice("auto", "no", f"fp32: bf16 gained only {gain:.2f}x on the model's step "
                           f"(needs {margin:.2f}x)", probes)


def no_sync_all(acc, model) -> contextlib.AbstractContextManager:
    """Backward passes of a probe must not all-reduce (each rank probes on its own)."""
    return acc.no_sync(model) if acc.num_processes > 1 else contextlib.nullcontext()
