"""3-D rotary positions inside attention, laid out exactly as the released V-JEPA 2 weights expect.

Each head's first ``3 * d`` channels are rotated, ``d = 2 * ((head_dim // 3) // 2)``
per axis in the order time, row, column; leftover channels pass through.
Within an axis the angles ``pos * 10000^(-j / (d/2))``, ``j < d/2``, are tiled
(``[a_0..a_{d/2-1}, a_0..a_{d/2-1}]``) and the rotation pairs are adjacent
channels ``(2i, 2i+1)``. That pairing does not match the tiling the textbook
way, but the checkpoints were trained with it, so it is reproduced as is.

Blocks are timm's ``Block`` with a timm ``Attention`` subclass that rotates
queries and keys, so parameter names stay timm's (``attn.qkv``, ``attn.proj``).
The same blocks take an attention mask and a key/value cache, so the
action-conditioned predictor uses them with 1-D relative positions over frames
(:func:`frame_rope_tables`).
"""

from __future__ import annotations

from functools import partial
from typing import Protocol

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block
from torch import nn

from jepa.models.vit import TubeletEmbed, VitSize, gather_tokens, init_patch_embed, init_weights, token_grid

Rope = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [..., N, 3 * axis_dims], broadcast over heads


def axis_dims(head_dim: int) -> int:
    """Channels rotated per axis (time, row, column)."""
    return 2 * ((head_dim // 3) // 2)


def grid_positions(grid: tuple[int, int, int], device: torch.device | None = None) -> torch.Tensor:
    """[T*H*W, 3] float (t, h, w) positions of a token grid ordered t -> h -> w."""
    axes = [torch.arange(n, device=device, dtype=torch.float32) for n in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def rope_tables(positions: torch.Tensor, head_dim: int) -> Rope:
    """(cos, sin) [..., N, 3 * axis_dims(head_dim)] for positions [..., N, 3], in float32."""
    d = axis_dims(head_dim)
    if d == 0:
        raise ValueError(f"head_dim {head_dim} is too small for 3-D rotary positions (needs >= 6)")
    omega = 1.0 / 10000.0 ** (torch.arange(d // 2, device=positions.device, dtype=torch.float32) / (d / 2.0))
    angles = positions.float().unsqueeze(-1) * omega  # [..., N, 3, d/2]
    angles = torch.cat([angles, angles], dim=-1).flatten(-2)  # tiled per axis -> [..., N, 3 * d]
    return angles.cos(), angles.sin()


def frame_rope_tables(frames: torch.Tensor, head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Complex unit rotations [..., head_dim / 2] turning channel pair (2i, 2i+1) by ``frames * base^(-2i / head_dim)``.

    Unlike :func:`rope_tables`' V-JEPA 2 layout, both channels of a pair share one angle, so each
    rotation is orthogonal and a query-key product depends only on the frame difference: keys cached
    at one frame index stay valid however the window slides. Angles are computed in float64, so large
    frame indices lose no precision.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim {head_dim} must be even for rotary positions")
    omega = base ** -(torch.arange(head_dim // 2, device=frames.device, dtype=torch.float64) / (head_dim / 2))
    angles = frames.double().unsqueeze(-1) * omega
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def apply_rope(x: torch.Tensor, rope: Rope | torch.Tensor) -> torch.Tensor:
    """Rotate x [B, heads, N, head_dim]: its first channels by (cos, sin) tables, the rest passing through;
    or every channel pair by complex unit rotations [..., N, head_dim / 2] (one multiply, about 3x faster)."""
    if isinstance(rope, torch.Tensor):
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * rope).flatten(-2).to(x.dtype)
    cos, sin = rope
    r = cos.shape[-1]
    head = x[..., :r].float()
    pairs = head.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat([(head * cos + rotated * sin).to(x.dtype), x[..., r:]], dim=-1)


class KVCache(Protocol):
    """Holds a layer's past keys and values: stores the new ones and attends the queries over all it holds."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class RopeAttention(Attention):
    """timm's multi-head self-attention with rotary positions applied to queries and keys.

    ``attn_mask`` (bool, True = may attend) restricts which keys a query sees; with a ``cache`` the
    rotated keys and values of ``x`` are added to it and the queries attend over everything it holds.
    """

    def forward(self, x: torch.Tensor, rope: Rope | torch.Tensor,  # type: ignore[override]
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], rope).unbind(0)
        if cache is not None:
            x = cache.attend(q, k, qkv[2])
        else:
            x = F.scaled_dot_product_attention(q, k, qkv[2], attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim)))


class RopeBlock(Block):
    """timm's pre-LN block whose attention takes the rotary tables (and optionally a mask and a cache)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                         norm_layer=partial(nn.LayerNorm, eps=1e-6), attn_layer=RopeAttention)

    def forward(self, x: torch.Tensor, rope: Rope | torch.Tensor,  # type: ignore[override]
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), rope, attn_mask, cache)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class RopeVisionTransformer(nn.Module):
    """Tubelet embedding + rotary-attention blocks + final LayerNorm (V-JEPA 2); no position table.

    Positions come from the input's own token grid, so any frame count and
    image size work. ``forward(x, keep)`` runs only the kept tokens, each
    rotated by its position in the full grid.
    """

    def __init__(self, *, patch_embed: TubeletEmbed, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(RopeBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        init_weights(self, self.blocks)
        init_patch_embed(patch_embed)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Video [B, C, T, H, W] -> normed tokens [B, N, D], or [B, K, D] for ``keep`` indices [B, K]."""
        grid = token_grid(x, self.patch_embed.proj.kernel_size)
        tokens = self.patch_embed(x)
        positions = grid_positions(grid, device=x.device)  # [N, 3]
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
            positions = positions[keep]  # [B, K, 3]
        cos, sin = rope_tables(positions, self.embed_dim // self.num_heads)
        rope = (cos.unsqueeze(-3), sin.unsqueeze(-3))  # broadcast over heads
        for block in self.blocks:
            tokens = block(tokens, rope)
        return self.norm(tokens)


def vit_rope(size: VitSize, *, patch_size: int, tubelet_size: int, in_chans: int) -> RopeVisionTransformer:
    """A V-JEPA 2 style video ViT: tubelet embedding and 3-D rotary positions."""
    patch_embed = TubeletEmbed(patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans,
                               embed_dim=size.embed_dim)
    return RopeVisionTransformer(patch_embed=patch_embed, embed_dim=size.embed_dim, depth=size.depth,
                                 num_heads=size.num_heads, mlp_ratio=size.mlp_ratio)
