import math

import torch

from jepa.models.pos_embed import sincos_1d, sincos_2d


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
