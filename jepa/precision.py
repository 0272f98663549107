"""What ``precision: auto`` means on the machine at hand.

A CPU that reports native bf16 is not always faster in bf16. Measured with one thread: on the AMD EPYC
the defaults were tuned on, bf16 autocast made the ViT-Tiny I-JEPA step 2.9x and the two-rooms grid
predictor's step 1.5x faster; on an Intel Xeon with AVX512-BF16 but no AMX, a bf16 matmul of 1024
ran at 48 GFLOP/s against 126 in fp32, and the same two steps were 1.4x and 1.3x *slower* in bf16
(README, Performance). So ``auto`` on a CPU times one small matmul in each dtype, once per process,
and takes bf16 only where it is clearly faster.
"""

from __future__ import annotations

import functools

import torch

from jepa.single_threaded import best_seconds_on_one_thread

BF16_MIN_SPEEDUP = 1.2  # below this the casts around every bf16 op eat the gain (both machines above)


@functools.cache
def cpu_bf16_matmul_speedup(size: int = 256, repeats: int = 20) -> float:
    """fp32 time / bf16 time of a ``size`` square matmul on one CPU thread (best of ``repeats``: the fastest
    run is the one no other process interrupted; about 50 ms in all)."""
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, size, size, generator=generator)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        x, y = a.to(dtype), b.to(dtype)
        best[dtype] = best_seconds_on_one_thread(lambda: x @ y, repeats)
    return best[torch.float32] / best[torch.bfloat16]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for 'auto' | 'bf16' | 'fp32' on this device (None means plain fp32).

    'auto': bf16 on a GPU that supports it; on a CPU, bf16 where it has native bf16 *and* a bf16 matmul
    runs at least :data:`BF16_MIN_SPEEDUP` x faster than fp32 (:func:`cpu_bf16_matmul_speedup`).
    """
    if precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    native = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    return torch.bfloat16 if native and cpu_bf16_matmul_speedup() >= BF16_MIN_SPEEDUP else None
