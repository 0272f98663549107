import math

import torch

from jepa.models.pos_embed import sincos_1d, sincos_2d, sincos_3d


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
