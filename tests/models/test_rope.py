import math

import pytest
import torch

from jepa.models.rope import apply_rope, axis_dims, frame_rope_tables, grid_positions, rope_tables, vit_rope
from jepa.models.vit import resolve_size


def test_axis_dims_follow_the_reference_rule():
    assert [axis_dims(h) for h in (64, 88, 80, 6, 5)] == [20, 28, 26, 2, 0]
    with pytest.raises(ValueError, match="too small"):
        rope_tables(torch.zeros(1, 3), 5)


def test_tables_tile_each_axis_frequencies_in_time_row_column_order():
    head_dim, d = 64, 20
    cos, sin = rope_tables(torch.tensor([[3.0, 5.0, 7.0]]), head_dim)
    assert cos.shape == sin.shape == (1, 3 * d)
    for axis, pos in enumerate((3.0, 5.0, 7.0)):
        for j in range(d):
            angle = pos / 10000 ** ((j % (d // 2)) / (d / 2))  # frequencies repeat, not interleave
            assert math.isclose(sin[0, axis * d + j].item(), math.sin(angle), abs_tol=1e-5)
            assert math.isclose(cos[0, axis * d + j].item(), math.cos(angle), abs_tol=1e-5)


def test_rotation_pairs_adjacent_channels_and_leaves_the_rest():
    head_dim = 64
    positions = torch.tensor([[1.0, 2.0, 3.0]])
    cos, sin = rope_tables(positions, head_dim)
    x = torch.randn(2, 4, 1, head_dim)
    out = apply_rope(x, (cos, sin))
    torch.testing.assert_close(out[..., 60:], x[..., 60:])  # 64 - 3 * 20 channels are not rotated
    for c in (0, 1, 22, 59):
        partner = c + 1 if c % 2 == 0 else c - 1
        sign = -1.0 if c % 2 == 0 else 1.0
        expected = x[..., c] * cos[0, c] + sign * x[..., partner] * sin[0, c]
        torch.testing.assert_close(out[..., c], expected)
    torch.testing.assert_close(apply_rope(x, rope_tables(torch.zeros(1, 3), head_dim)), x)  # position 0: identity


def test_frame_rotations_turn_each_pair_by_one_angle_and_depend_on_frame_differences_only():
    head_dim = 8
    x = torch.randn(2, 3, 4, head_dim)
    out = apply_rope(x, frame_rope_tables(torch.tensor([5.0]), head_dim))
    for i in range(head_dim // 2):
        angle = 5.0 / 10000 ** (2 * i / head_dim)
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        torch.testing.assert_close(out[..., 2 * i], a * math.cos(angle) - b * math.sin(angle))
        torch.testing.assert_close(out[..., 2 * i + 1], b * math.cos(angle) + a * math.sin(angle))
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(m: float, n: float) -> torch.Tensor:
        return apply_rope(q, frame_rope_tables(torch.tensor(m), head_dim)) @ \
            apply_rope(k, frame_rope_tables(torch.tensor(n), head_dim))

    torch.testing.assert_close(score(0.0, 2.0), score(37.0, 39.0))
    with pytest.raises(ValueError, match="even"):
        frame_rope_tables(torch.zeros(1), 7)


def test_grid_positions_are_t_h_w_ordered():
    pos = grid_positions((2, 3, 4))
    assert pos.shape == (24, 3)
    assert pos[0].tolist() == [0, 0, 0] and pos[5].tolist() == [0, 1, 1] and pos[23].tolist() == [1, 2, 3]


def test_kept_tokens_carry_their_grid_positions():
    torch.manual_seed(0)
    model = vit_rope(resolve_size("vit_tiny", depth=2, num_heads=2), patch_size=8, tubelet_size=2, in_chans=1).eval()
    clip = torch.randn(2, 1, 4, 16, 16)  # 2 x 2 x 2 tokens
    perm = torch.stack([torch.randperm(8), torch.randperm(8)])
    with torch.no_grad():
        full = model(clip)
        kept = model(clip, keep=perm)
        torch.testing.assert_close(kept, torch.gather(full, 1, perm.unsqueeze(-1).expand(-1, -1, full.shape[-1])),
                                   atol=1e-5, rtol=0)
        # positions matter: the same content in every tubelet still gives different tokens per position
        same = clip[:, :, :2].repeat(1, 1, 2, 1, 1)
        tokens = model(same)
        assert (tokens[:, :4] - tokens[:, 4:]).abs().max() > 1e-3
        # any clip size runs without a table to resize
        assert model(torch.randn(1, 1, 6, 24, 32)).shape == (1, 3 * 3 * 4, 192)
