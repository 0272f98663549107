"""Attentive probes: learned queries cross-attending over frozen encoder tokens (V-JEPA, V-JEPA 2).

Mean pooling throws away which tokens matter; a learned query lets the probe
weight them, so a frozen encoder is scored on what its tokens hold rather than
on what survives averaging. ``depth`` optional self-attention blocks run over
the tokens first (V-JEPA 2's probe); ``depth=0`` is V-JEPA's.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from jepa.models.vit import init_weights, make_blocks

__all__ = ["AttentiveClassifier", "AttentivePooler", "CrossAttention"]

_LN = partial(nn.LayerNorm, eps=1e-6)


def _check_dims(dim: int, num_heads: int) -> None:
    for name, value in (("dim", dim), ("num_heads", num_heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if dim % num_heads:
        raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")


class CrossAttention(nn.Module):
    """Multi-head attention of queries [B, Q, D] over tokens [B, N, D] (fused SDPA, no positions)."""

    def __init__(self, dim: int, *, num_heads: int) -> None:
        super().__init__()
        _check_dims(dim, num_heads)
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        batch, n, dim = tokens.shape
        heads = self.num_heads
        q = self.q(queries).view(batch, -1, heads, dim // heads).transpose(1, 2)
        k, v = self.kv(tokens).view(batch, n, 2, heads, dim // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, -1, dim))


class AttentivePooler(nn.Module):
    """Tokens [B, N, D] -> [B, num_queries * D] (``reduce="concat"``) or [B, D] (``"mean"``)."""

    def __init__(self, dim: int, *, num_heads: int, num_queries: int = 1, depth: int = 0,
                 mlp_ratio: float = 4.0, reduce: Literal["concat", "mean"] = "concat") -> None:
        super().__init__()
        _check_dims(dim, num_heads)
        if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
            raise ValueError(f"num_queries must be a positive int, got {num_queries!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depth must be an int >= 0, got {depth!r}")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}")
        if reduce not in ("concat", "mean"):
            raise ValueError(f"reduce must be 'concat' or 'mean', got {reduce!r}")
        self.reduce = reduce
        self.out_dim = dim * num_queries if reduce == "concat" else dim
        self.blocks = make_blocks(dim, depth, num_heads, mlp_ratio)
        self.query = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.norm1 = _LN(dim)
        self.xattn = CrossAttention(dim, num_heads=num_heads)
        self.norm2 = _LN(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        init_weights(self, self.blocks)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3 or tokens.shape[-1] != self.query.shape[-1]:
            raise ValueError(f"tokens must be [B, N, {self.query.shape[-1]}], got shape {tuple(tokens.shape)}")
        for block in self.blocks:
            tokens = block(tokens)
        q = self.query.expand(len(tokens), -1, -1)
        q = q + self.xattn(q, self.norm1(tokens))
        q = q + self.mlp(self.norm2(q))
        return q.flatten(1) if self.reduce == "concat" else q.mean(dim=1)


class AttentiveClassifier(nn.Module):
    """One-query attentive pooler and a linear head (no LayerNorm before it, as in V-JEPA)."""

    def __init__(self, dim: int, num_classes: int, *, num_heads: int, depth: int = 0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.pooler = AttentivePooler(dim, num_heads=num_heads, depth=depth)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooler(tokens))
