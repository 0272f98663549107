"""Vision Transformer encoder without a cls token, able to run only a subset of its tokens.

Blocks, attention (fused scaled-dot-product) and the patch embedding are
timm's; parameter names match timm's ``VisionTransformer`` so weights move
between the two without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from jepa.models.pos_embed import resize_pos_embed, sincos_2d, sincos_3d


@dataclass(frozen=True)
class VitSize:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


VIT_SIZES: dict[str, VitSize] = {
    "vit_tiny": VitSize(192, 12, 3),
    "vit_small": VitSize(384, 12, 6),
    "vit_base": VitSize(768, 12, 12),
    "vit_large": VitSize(1024, 24, 16),
    "vit_huge": VitSize(1280, 32, 16),
    "vit_giant": VitSize(1408, 40, 16, 48 / 11),
    "vit_giant_xformers": VitSize(1408, 40, 22, 48 / 11),  # the V-JEPA 2 giant (the reference's name)
}


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Pick tokens ``idx`` [B, K] out of ``x`` [B, N, D] -> [B, K, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def token_grid(x: torch.Tensor, kernel: tuple[int, ...]) -> tuple[int, ...]:
    """The token grid of an input [B, C, (T,) H, W] under a patch/tubelet ``kernel`` that must tile it exactly."""
    sizes = tuple(x.shape[2:])
    if len(sizes) != len(kernel):
        raise ValueError(f"input of shape {tuple(x.shape)} does not fit a {len(kernel)}-D patch embedding")
    if any(s % k for s, k in zip(sizes, kernel)):
        raise ValueError(f"input size {sizes} is not a multiple of the patch/tubelet size {tuple(kernel)}")
    return tuple(s // k for s, k in zip(sizes, kernel))


def make_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float, block: type[Block] = Block) -> nn.ModuleList:
    """Pre-LN timm blocks (or a subclass, ``block``) as in the references: qkv bias, GELU MLP, LayerNorm eps 1e-6."""
    return nn.ModuleList(
        block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        for _ in range(depth)
    )


def init_weights(module: nn.Module, blocks: nn.ModuleList) -> None:
    """Reference init: truncated normal 0.02 for linear layers, residual projections scaled by depth."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for layer_id, block in enumerate(blocks, start=1):
        block.attn.proj.weight.data.div_((2.0 * layer_id) ** 0.5)
        block.mlp.fc2.weight.data.div_((2.0 * layer_id) ** 0.5)


def init_patch_embed(patch_embed: nn.Module) -> None:
    """Xavier on the flattened kernel (as MAE): with the reference 0.02 a small grey-scale
    patch gives tokens that are mostly position, and training collapses (DESIGN.md)."""
    proj = getattr(patch_embed, "proj", None)
    if proj is not None:
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)


class TubeletEmbed(nn.Module):
    """Video [B, C, T, H, W] -> tokens [B, T/t * H/p * W/p, D] (ordered t -> h -> w) with one Conv3d."""

    def __init__(self, *, patch_size: int, tubelet_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"video input must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Patch embedding + fixed positions + pre-LN blocks + final LayerNorm.

    ``forward(x, keep)`` embeds every patch but runs the blocks only on the
    kept token indices, which is where I-JEPA's context encoder saves compute.
    Inputs of another size get the position table resized from ``grid``
    (bicubic for images, trilinear for video; see :func:`resize_pos_embed`).
    """

    def __init__(
        self,
        *,
        patch_embed: nn.Module,
        pos_embed: torch.Tensor,
        grid: tuple[int, ...],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if pos_embed.numel() != math.prod(grid) * embed_dim:
            raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)} does not fit grid {grid} x {embed_dim}")
        self.patch_embed = patch_embed
        self.grid = tuple(grid)
        self.register_buffer("pos_embed", pos_embed.reshape(1, -1, embed_dim).clone())
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        init_weights(self, self.blocks)
        init_patch_embed(patch_embed)

    def regrid(self, grid: tuple[int, ...]) -> None:
        """Make ``grid`` the native grid, resizing the position table once instead of on every call."""
        self.pos_embed = resize_pos_embed(self.pos_embed, self.grid, grid).contiguous()
        self.grid = tuple(grid)

    @property
    def num_tokens(self) -> int:
        return self.pos_embed.shape[1]

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Images -> normed tokens [B, N, D], or [B, K, D] for ``keep`` indices [B, K]."""
        grid = token_grid(x, self.patch_embed.proj.kernel_size)
        tokens = self.patch_embed(x) + resize_pos_embed(self.pos_embed, self.grid, grid)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def resolve_size(
    arch: str,
    *,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float | None = None,
) -> VitSize:
    """A named size with any of its numbers overridden."""
    if arch not in VIT_SIZES:
        raise ValueError(f"unknown ViT size {arch!r}; choose from {sorted(VIT_SIZES)}")
    base = VIT_SIZES[arch]
    size = VitSize(
        embed_dim or base.embed_dim, depth or base.depth, num_heads or base.num_heads, mlp_ratio or base.mlp_ratio
    )
    if size.embed_dim % size.num_heads:
        raise ValueError(f"embed_dim {size.embed_dim} is not divisible by num_heads {size.num_heads}")
    return size


def vit_2d(size: VitSize, *, img_size: int, patch_size: int, in_chans: int) -> VisionTransformer:
    """A 2-D image ViT with sincos positions over the (img_size / patch_size)^2 grid."""
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    grid = img_size // patch_size
    patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=size.embed_dim,
                             strict_img_size=False)
    return VisionTransformer(
        patch_embed=patch_embed,
        pos_embed=sincos_2d(size.embed_dim, (grid, grid)),
        grid=(grid, grid),
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=size.mlp_ratio,
    )


def vit_3d(
    size: VitSize, *, img_size: int, num_frames: int, patch_size: int, tubelet_size: int, in_chans: int
) -> VisionTransformer:
    """A video ViT: tubelet embedding and 3-D sincos positions over the (T/t, H/p, W/p) grid."""
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
    if num_frames % tubelet_size:
        raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
    grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
    patch_embed = TubeletEmbed(
        patch_size=patch_size, tubelet_size=tubelet_size, in_chans=in_chans, embed_dim=size.embed_dim
    )
    return VisionTransformer(
        patch_embed=patch_embed,
        pos_embed=sincos_3d(size.embed_dim, grid),
        grid=grid,
        embed_dim=size.embed_dim,
        depth=size.depth,
        num_heads=size.num_heads,
        mlp_ratio=size.mlp_ratio,
    )
