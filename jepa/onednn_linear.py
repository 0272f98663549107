"""fp32 linear layers on CPU through oneDNN instead of the default BLAS.

PyTorch's CPU builds run fp32 ``nn.Linear`` through MKL, which on AMD CPUs
takes a slow generic path: on this project's EPYC machines oneDNN's fp32 GEMM
(also shipped inside PyTorch, used by it for bf16) is about 2x faster for the
forward and for both backward products (README "Performance"). On an Intel Xeon
it is the other way round (a layer's forward and backward 0.7-0.8x MKL's speed),
so ``perf.onednn_linear: auto`` times one layer both ways
(:func:`onednn_linear_speedup`). This module routes the three products of a
linear layer through ``torch.ops.mkldnn._linear_pointwise``; it is exact fp32
(no reduced-precision math mode), and anything it does not cover (GPU tensors,
other dtypes, an active autocast, a PyTorch without the op, tracing by
``torch.compile``, which cannot trace the op) falls back to ``F.linear``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from jepa.single_threaded import best_seconds_on_one_thread


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN and the dense linear op this module uses."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


ONEDNN_MIN_SPEEDUP = 1.1  # "auto" switches only for a clear gain: the two are equal to within 5 % on some CPUs


def _gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [N, in] @ weight[out, in]^T (+ bias) on oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with its input and weight gradients, each one oneDNN GEMM."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(flat, weight)
        ctx.has_bias = bias is not None
        ctx.input_shape = x.shape
        return _gemm(flat, weight, bias).reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        flat, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = _gemm(grad, weight.t(), None).reshape(ctx.input_shape) if need_x else None
        grad_w = _gemm(grad.t(), flat.t(), None) if need_w else None
        grad_b = grad.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` with fp32 CPU products on oneDNN; every other case is plain ``F.linear``."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or torch.is_autocast_enabled("cpu") or x.shape[-1] == 0 or not onednn_available()
            or torch.compiler.is_compiling()):
        return F.linear(x, weight, bias)
    return _OneDNNLinear.apply(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose forward is :func:`onednn_linear` (same parameters, same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.weight, self.bias)


def use_onednn_linear(model: nn.Module) -> int:
    """Switch every plain ``nn.Linear`` in ``model`` to :class:`OneDNNLinear` in place; returns how many.

    Changing the class keeps the parameters, their names and any references to
    them (an optimizer built already keeps working).
    """
    layers = [m for m in model.modules() if type(m) is nn.Linear]
    for layer in layers:
        layer.__class__ = OneDNNLinear
    return len(layers)


@functools.cache
def onednn_linear_speedup(rows: int = 512, features: tuple[int, int] = (384, 1536), repeats: int = 5) -> float:
    """MKL time / oneDNN time of one fp32 linear layer's forward and backward on one CPU thread (best of
    ``repeats`` each, once per process: about 0.1 s)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, features[0], generator=generator, requires_grad=True)
    weight = torch.randn(features[1], features[0], generator=generator, requires_grad=True)
    grad = torch.randn(rows, features[1], generator=generator)
    best = [best_seconds_on_one_thread(lambda: torch.autograd.grad(linear(x, weight, None), [x, weight], grad),
                                       repeats) for linear in (F.linear, _OneDNNLinear.apply)]
    return best[0] / best[1]


def resolve_onednn_linear(choice: bool | Literal["auto"], device: torch.device) -> bool:
    """Whether to route fp32 linear layers through oneDNN: never off the CPU or without the op; ``auto`` where
    it is at least :data:`ONEDNN_MIN_SPEEDUP` x faster than MKL here (:func:`onednn_linear_speedup`)."""
    if choice not in (True, False, "auto"):
        raise ValueError(f"onednn_linear must be true, false or 'auto', got {choice!r}")
    if device.type != "cpu" or not choice or not onednn_available():
        return False
    return choice is True or onednn_linear_speedup() >= ONEDNN_MIN_SPEEDUP
