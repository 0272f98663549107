"""Explicit FLOP counts of a JEPA training step, for model FLOPs utilisation (MFU).

Counts are matmul FLOPs (2 per multiply-add) of the shapes a step actually
runs: the context encoder on the kept tokens, the target encoder on all
tokens, and the predictor on context + mask tokens, per mask set. Attention is
counted over the whole score matrix, also where an attention mask blanks part
of it (the kernels compute it). Layer norms, softmax and activations are left
out, as is usual for MFU. Trained parts cost 3x their forward (forward,
gradient of the input, gradient of the weights); the target encoder only its
forward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from jepa.build import grid_size, is_video
from jepa.config import Config
from jepa.masks import MaskSet
from jepa.models.vit import resolve_size

# Dense bf16 tensor-core peaks from the vendors' data sheets, in FLOP/s, by a substring of the device name.
PEAK_BF16_FLOPS = {
    "H200": 989.4e12,
    "H100 PCIe": 756.0e12,
    "H100": 989.4e12,
    "A100": 312.0e12,
    "L40S": 362.05e12,
    "A10G": 70.0e12,
}


@dataclass(frozen=True)
class TransformerShape:
    """What a stack of pre-LN blocks costs per token: width, depth and MLP ratio."""

    dim: int
    depth: int
    mlp_ratio: float = 4.0


def blocks_forward_flops(shape: TransformerShape, *, sequences: int, tokens: int) -> int:
    """Forward matmul FLOPs of ``shape.depth`` blocks on ``sequences`` sequences of ``tokens`` tokens each."""
    d, hidden = shape.dim, int(shape.dim * shape.mlp_ratio)
    linear = 2 * tokens * (3 * d * d + d * d + 2 * d * hidden)  # qkv, proj, fc1 + fc2
    attention = 2 * 2 * tokens * tokens * d  # QK^T and (softmax)V over all heads
    return sequences * shape.depth * (linear + attention)


def split_shared_context_flops(shape: TransformerShape, *, sequences: int, context: int, blocks: int,
                               block_size: int) -> int:
    """Forward matmul FLOPs of the split shared-context predictor pass (jepa/models/shared_context.py):
    context x context and block x (context + block) attention, the last block's context only through qkv."""
    d, hidden = shape.dim, int(shape.dim * shape.mlp_ratio)
    targets = blocks * block_size
    per_token = 2 * (3 * d * d + d * d + 2 * d * hidden)
    mask_rows = 2 * 2 * targets * (context + block_size) * d
    context_rows = 2 * 2 * context * context * d
    full = (context + targets) * per_token + mask_rows + context_rows
    last = context * 2 * 3 * d * d + targets * per_token + mask_rows
    return sequences * ((shape.depth - 1) * full + last) if shape.depth else 0


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


@dataclass(frozen=True)
class StepShape:
    """The shapes behind one JEPA step's FLOPs."""

    encoder: TransformerShape
    predictor: TransformerShape
    num_tokens: int  # tokens per input (patches or tubelets)
    patch_volume: int  # input values per token (C * p * p, or C * t * p * p)
    shared_context: bool = False  # predictor runs one sequence per sample (SharedContextPredictor)
    split_attention: bool = False  # ... as two streams with block-by-block attention (perf.split_attention)


def step_shape(cfg: Config, *, split_attention: bool) -> StepShape:
    """The FLOP-relevant shapes of the model ``cfg`` builds, its predictor's attention split or not
    (``perf.split_attention`` as resolved on the device: :func:`jepa.perf.split_attention_for`)."""
    e, p = cfg.encoder, cfg.predictor
    size = resolve_size(e.arch, embed_dim=e.embed_dim, depth=e.depth, num_heads=e.num_heads, mlp_ratio=e.mlp_ratio)
    tubelet = cfg.video.tubelet_size if is_video(cfg) else 1
    return StepShape(
        encoder=TransformerShape(size.embed_dim, size.depth, size.mlp_ratio),
        predictor=TransformerShape(p.embed_dim, p.depth),
        num_tokens=math.prod(grid_size(cfg)),
        patch_volume=e.in_chans * tubelet * e.patch_size**2,
        shared_context=p.shared_context,
        split_attention=p.shared_context and split_attention,
    )


def step_flops(shape: StepShape, masks: Sequence[MaskSet]) -> dict[str, int]:
    """Forward FLOPs of each part of a training step on a batch with ``masks``, and the step total."""
    e, p = shape.encoder, shape.predictor
    batch = int(masks[0].context.shape[0])
    embed = linear_flops(batch * shape.num_tokens, shape.patch_volume, e.dim)  # the patch embedding runs on all tokens
    target = embed + blocks_forward_flops(e, sequences=batch, tokens=shape.num_tokens)
    context = predictor = 0
    for mask in masks:
        nc = int(mask.context.shape[1])
        _, m, k = (int(n) for n in mask.targets.shape)
        context += embed + blocks_forward_flops(e, sequences=batch, tokens=nc)
        if shape.split_attention:
            pred_blocks = split_shared_context_flops(p, sequences=batch, context=nc, blocks=m, block_size=k)
        elif shape.shared_context:
            pred_blocks = blocks_forward_flops(p, sequences=batch, tokens=nc + m * k)
        else:
            pred_blocks = blocks_forward_flops(p, sequences=batch * m, tokens=nc + k)
        predictor += (linear_flops(batch * nc, e.dim, p.dim) + pred_blocks
                      + linear_flops(batch * m * k, p.dim, e.dim))
    return {
        "target_forward": target,
        "context_forward": context,
        "predictor_forward": predictor,
        "step": target + 3 * (context + predictor),
    }


def peak_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak, when it is in :data:`PEAK_BF16_FLOPS` (first matching name wins)."""
    for name, peak in PEAK_BF16_FLOPS.items():
        if name in device_name:
            return peak
    return None
