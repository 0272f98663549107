"""3-D rotary positions inside attention, laid out exactly as the released V-JEPA 2 weights expect.

Each head's first ``3 * d`` channels are rotated, ``d = 2 * ((head_dim // 3) // 2)``
per axis in the order time, row, column; leftover channels pass through.
Within an axis the angles ``pos * 10000^(-j / (d/2))``, ``j < d/2``, are tiled
(``[a_0..a_{d/2-1}, a_0..a_{d/2-1}]``) and the rotation pairs are adjacent
channels ``(2i, 2i+1)``. That pairing does not match the tiling the textbook
way, but the checkpoints were trained with it, so it is reproduced as is.

Blocks are timm's ``Block`` with a timm ``Attention`` subclass that rotates
queries and keys, so parameter names stay timm's (``attn.qkv``, ``attn.proj``).
"""

from __future__ import annotations

from functools import partial

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


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate the first channels of x [B, heads, N, head_dim] by (cos, sin); the rest pass through."""
    cos, sin = rope
    r = cos.shape[-1]
    head, rest = x[..., :r].float(), x[..., r:]
    pairs = head.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.cat([(head * cos + rotated * sin).to(x.dtype), rest], dim=-1)


class RopeAttention(Attention):
    """timm's multi-head self-attention with rotary positions applied to queries and keys."""

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:  # type: ignore[override]
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim)))


class RopeBlock(Block):
    """timm's pre-LN block whose attention takes the rotary tables."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                         norm_layer=partial(nn.LayerNorm, eps=1e-6), attn_layer=RopeAttention)

    def forward(self, x: torch.Tensor, rope: Rope) -> torch.Tensor:  # type: ignore[override]
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), rope)))
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
