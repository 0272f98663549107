import math

import pytest
import torch

from jepa.models.pos_embed import resize_pos_embed, sincos_1d, sincos_2d, sincos_3d


def test_sincos_1d_matches_formula():
    table = sincos_1d(8, torch.arange(5))
    for pos in range(5):
        for i in range(4):
            omega = 1.0 / 10000 ** (i / 4)
            assert math.isclose(table[pos, i].item(), math.sin(pos * omega), abs_tol=1e-12)
            assert math.isclose(table[pos, 4 + i].item(), math.cos(pos * omega), abs_tol=1e-12)


def test_sincos_2d_layout_column_then_row():
    dim, h, w = 16, 3, 5
    table = sincos_2d(dim, (h, w))
    assert table.shape == (h * w, dim)
    r, c = 2, 4
    token = r * w + c
    torch.testing.assert_close(table[token, : dim // 2], sincos_1d(dim // 2, torch.tensor([c]))[0].float())
    torch.testing.assert_close(table[token, dim // 2 :], sincos_1d(dim // 2, torch.tensor([r]))[0].float())


def test_sincos_3d_slices_time_row_column():
    dim, grid = 24, (2, 3, 4)
    table = sincos_3d(dim, grid)  # uniform power: 8 channels per axis
    t, r, c = 1, 2, 3
    token = (t * 3 + r) * 4 + c
    torch.testing.assert_close(table[token, 0:8], sincos_1d(8, torch.tensor([t]))[0].float())
    torch.testing.assert_close(table[token, 8:16], sincos_1d(8, torch.tensor([r]))[0].float())
    torch.testing.assert_close(table[token, 16:24], sincos_1d(8, torch.tensor([c]))[0].float())
    halves = sincos_3d(dim, grid, uniform_power=False)  # time 12, rows 6, columns 6
    torch.testing.assert_close(halves[token, 12:18], sincos_1d(6, torch.tensor([r]))[0].float())
    assert sincos_3d(192, (8, 14, 14)).shape == (8 * 14 * 14, 192)


def _source_positions(old: int, new: int) -> torch.Tensor:
    """Where output cell i samples the old grid under align_corners=False resizing."""
    return (torch.arange(new, dtype=torch.float64) + 0.5) * old / new - 0.5


def test_resize_to_the_same_grid_is_the_identity():
    table2 = sincos_2d(64, (5, 7)).reshape(1, 35, 64)
    table3 = sincos_3d(96, (2, 3, 4)).reshape(1, 24, 96)
    assert resize_pos_embed(table2, (5, 7), (5, 7)) is table2
    assert resize_pos_embed(table3, (2, 3, 4), (2, 3, 4)) is table3


def test_2d_resize_keeps_the_grid_layout():
    h, w, dim = 8, 8, 64
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.stack([rows.float(), cols.float()], dim=-1).repeat(1, 1, dim // 2).reshape(1, h * w, dim)
    out = resize_pos_embed(table, (h, w), (12, 10)).reshape(12, 10, dim)
    # the row channel is constant along each row, the column channel down each column
    torch.testing.assert_close(out[..., 0], out[:, :1, 0].expand(12, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 1], out[:1, :, 1].expand(12, 10), atol=1e-5, rtol=0)
    assert torch.all(out[1:, 0, 0] > out[:-1, 0, 0]) and torch.all(out[0, 1:, 1] > out[0, :-1, 1])


def test_2d_bicubic_resize_of_a_sincos_table_follows_the_sincos_of_the_new_positions():
    dim, old, new = 128, 8, 12
    out = resize_pos_embed(sincos_2d(dim, (old, old)).reshape(1, -1, dim), (old, old), (new, new))
    src = _source_positions(old, new)
    rows, cols = torch.meshgrid(src, src, indexing="ij")
    expected = torch.cat([sincos_1d(dim // 2, cols.reshape(-1)), sincos_1d(dim // 2, rows.reshape(-1))], dim=1)
    inside = ((rows >= 1) & (rows <= old - 2) & (cols >= 1) & (cols <= old - 2)).reshape(-1)  # no edge clamping
    slow = (1.0 / 10000 ** (torch.arange(dim // 4) / (dim / 4))) < 0.3  # frequencies a 1-token grid resolves well
    channels = torch.cat([slow, slow, slow, slow])
    assert inside.sum() > 20 and channels.sum() > 40
    torch.testing.assert_close(out[0][inside][:, channels], expected.float()[inside][:, channels], atol=2e-3, rtol=0)


def test_3d_resize_is_trilinear_and_shorter_clips_take_the_first_time_slots():
    dim, grid = 6, (4, 4, 4)
    t, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in grid), indexing="ij")
    table = torch.stack([t, h, w, 2 * t + h, h - w, torch.ones_like(t)], dim=-1).reshape(1, -1, dim)
    new = (6, 3, 5)
    out = resize_pos_embed(table, grid, new).reshape(*new, dim)
    st, sh, sw = torch.meshgrid(*(_source_positions(o, n).float() for o, n in zip(grid, new)), indexing="ij")
    inside = (st >= 0) & (st <= 3) & (sh >= 0) & (sh <= 3) & (sw >= 0) & (sw <= 3)
    expected = torch.stack([st, sh, sw, 2 * st + sh, sh - sw, torch.ones_like(st)], dim=-1)
    torch.testing.assert_close(out[inside], expected[inside], atol=1e-5, rtol=0)  # trilinear is exact on affine maps
    torch.testing.assert_close(resize_pos_embed(table, grid, (2, 4, 4)), table[:, :32])
    with pytest.raises(ValueError, match="cannot resize"):
        resize_pos_embed(table, grid, (4, 4))
