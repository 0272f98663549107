"""Fixed sine-cosine position tables (not learned), laid out as the I-JEPA checkpoints expect."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """[N] positions -> [N, dim]: sines in the first half, cosines in the second, frequencies 1/10000^(2i/dim)."""
    if dim % 2:
        raise ValueError(f"sincos_1d needs an even dim, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """[H*W, dim] table for a row-major (h, w) token grid.

    The first half of the channels encodes the column and the second half the
    row, which is the layout released I-JEPA weights were trained with.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1)
    return table.float()


def sincos_3d(dim: int, grid: tuple[int, int, int], *, uniform_power: bool = True) -> torch.Tensor:
    """[T*H*W, dim] table for a (t, h, w) token grid ordered t -> h -> w, channels in slices [time, row, column].

    ``uniform_power`` gives each axis the same number of channels (2 * ceil(dim / 6),
    truncated to ``dim``), as V-JEPA pretrains; otherwise time gets half and rows and
    columns a quarter each.
    """
    t, h, w = grid
    if uniform_power:
        dt = dh = dw = 2 * math.ceil(dim / 6)
    else:
        if dim % 4:
            raise ValueError(f"sincos_3d without uniform_power needs dim divisible by 4, got {dim}")
        dt, dh, dw = dim // 2, dim // 4, dim // 4
    if dh % 2:
        raise ValueError(f"sincos_3d needs an even number of channels per axis for dim {dim}")
    times, rows, cols = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat(
        [sincos_1d(dt, times.reshape(-1)), sincos_1d(dh, rows.reshape(-1)), sincos_1d(dw, cols.reshape(-1))], dim=1
    )
    return table[:, :dim].float()


def resize_pos_embed(table: torch.Tensor, old_grid: tuple[int, ...], new_grid: tuple[int, ...]) -> torch.Tensor:
    """A [1, N, D] position table over ``old_grid`` carried to ``new_grid`` (same object when the grids agree).

    Images: bicubic over the (H, W) grid (timm's resampler). Video: a shorter
    clip at the same spatial size takes the first time slots, as the V-JEPA
    encoder does; any other change is trilinear over (T, H, W).
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return table
    if len(old_grid) != len(new_grid) or len(old_grid) not in (2, 3):
        raise ValueError(f"cannot resize a position table from grid {old_grid} to {new_grid}")
    if len(old_grid) == 2:
        return resample_abs_pos_embed(table, new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=0)
    dim = table.shape[-1]
    if new_grid[1:] == old_grid[1:] and new_grid[0] < old_grid[0]:
        return table[:, : math.prod(new_grid)]
    volume = table.float().reshape(1, *old_grid, dim).permute(0, 4, 1, 2, 3)
    volume = F.interpolate(volume, size=new_grid, mode="trilinear", align_corners=False)
    return volume.permute(0, 2, 3, 4, 1).reshape(1, -1, dim).to(table.dtype)
