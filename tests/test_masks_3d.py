import pytest
import torch

from jepa.masks import LONG_RANGE, SHORT_RANGE, BlockSpec, MultiBlock3DMasks, RandomTubeMasks, round_down

GRID = (8, 14, 14)


def _cells(idx, grid=GRID):
    t, r = divmod(idx, grid[1] * grid[2])
    return t, *divmod(r, grid[2])


def test_multiblock_3d_reference_sets_are_disjoint_equal_sized_and_span_time():
    masks = MultiBlock3DMasks(grid=GRID)
    g = torch.Generator().manual_seed(0)
    covered = torch.zeros(8 * 14 * 14, dtype=torch.bool)
    for _ in range(50):
        sets = masks(16, g)
        assert len(sets) == 2  # short range + long range, each its own predictor pass
        for context, targets in sets:
            assert context.dtype == targets.dtype == torch.int64 and targets.shape[1] == 1
            for c, tgt in zip(context, targets[:, 0]):
                assert not set(c.tolist()) & set(tgt.tolist())
                assert len(set(c.tolist())) == len(c) and torch.equal(c, c.sort().values)
                times = {_cells(i)[0] for i in tgt.tolist()}
                assert times == set(range(8)) or len(tgt) < 8  # temporal scale 1.0: blocks cover all frames
            covered[targets.flatten()] = True
    assert covered.all()  # every token, last row / column / frame included, can be a target


def test_long_range_masks_more_than_short_range():
    short, long_ = MultiBlock3DMasks(grid=GRID)(32, torch.Generator().manual_seed(1))
    assert long_.targets.shape[-1] > short.targets.shape[-1]
    assert short.targets.shape[-1] >= 0.15 * 14 * 14 * 8  # at least one block's worth


def test_multiblock_3d_seedable_and_validated():
    masks = MultiBlock3DMasks(grid=GRID)
    a = masks(4, torch.Generator().manual_seed(3))
    b = masks(4, torch.Generator().manual_seed(3))
    assert all(torch.equal(x.context, y.context) and torch.equal(x.targets, y.targets) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="impossible masking"):
        MultiBlock3DMasks(grid=(2, 4, 4), specs=(BlockSpec(8, (1.0, 1.0)),), min_keep=2)(2, torch.Generator())
    with pytest.raises(ValueError):
        MultiBlock3DMasks(grid=(2, 4), specs=(SHORT_RANGE,))
    with pytest.raises(ValueError):
        MultiBlock3DMasks(grid=GRID, specs=(BlockSpec(0, (0.1, 0.2)),))
    assert LONG_RANGE.num_blocks == 2 and SHORT_RANGE.num_blocks == 8


def test_random_tube_masks_same_positions_in_every_frame():
    masks = RandomTubeMasks(grid=(4, 6, 6), ratio=0.75)
    ((context, targets),) = masks(8, torch.Generator().manual_seed(0))
    assert targets.shape == (8, 1, 4 * 27) and context.shape == (8, 4 * 9)
    for c, tgt in zip(context, targets[:, 0]):
        assert sorted(c.tolist() + tgt.tolist()) == list(range(4 * 36))
        per_frame = [{i % 36 for i in tgt.tolist() if i // 36 == t} for t in range(4)]
        assert all(p == per_frame[0] for p in per_frame)
    with pytest.raises(ValueError, match="must leave some"):
        RandomTubeMasks(grid=(4, 6, 6), ratio=1.0)


def test_multiblock_3d_token_multiple_rounds_context_and_targets_down_to_subsets():
    grid = (8, 14, 14)
    plain, rounded = MultiBlock3DMasks(grid=grid), MultiBlock3DMasks(grid=grid, token_multiple=8)
    for seed in range(10):
        for a, b in zip(plain(4, torch.Generator().manual_seed(seed)), rounded(4, torch.Generator().manual_seed(seed))):
            assert b.context.shape[1] == round_down(a.context.shape[1], 8, plain.min_keep)
            assert b.targets.shape[2] == round_down(a.targets.shape[2], 8, 1)
            for full, kept in ((a.context, b.context), (a.targets[:, 0], b.targets[:, 0])):
                assert all(set(k) <= set(f) for f, k in zip(full.tolist(), kept.tolist()))
            assert not set(b.context[0].tolist()) & set(b.targets[0, 0].tolist())
    with pytest.raises(ValueError, match="token_multiple"):
        MultiBlock3DMasks(grid=grid, token_multiple=0)


def test_multiblock_3d_counts_are_multiples_of_the_time_steps_without_rounding():
    """Blocks span every frame, so every count is T x a number of spatial positions: why 'auto' keeps
    token_multiple at 1 on clips (on 16 frames at 224 px, steps of 8 changed nothing)."""
    masks = MultiBlock3DMasks(grid=(8, 14, 14))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        for context, targets in masks(4, generator):
            assert context.shape[1] % 8 == 0 and targets.shape[2] % 8 == 0


def test_fixed_counts_give_every_batch_the_same_disjoint_counts_per_mask_set():
    masks = MultiBlock3DMasks(grid=GRID, fixed_counts=((400, 700), (100, 1100)))
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 5, 24):
        for (context, targets), (n_context, n_targets) in zip(masks(batch, generator), masks.fixed_counts):
            assert context.shape == (batch, n_context) and targets.shape == (batch, 1, n_targets)
            for c, t in zip(context.tolist(), targets[:, 0].tolist()):
                assert len(set(c)) == n_context and len(set(t)) == n_targets and not set(c) & set(t)
                assert c == sorted(c) and t == sorted(t)


def test_fixed_counts_are_uniform_subsets_so_late_frames_are_not_dropped():
    """Truncating the sorted indices (as the reference does) would keep early frames and drop late ones."""
    masks = MultiBlock3DMasks(grid=GRID, specs=(SHORT_RANGE,), fixed_counts=((300, 600),))
    generator = torch.Generator().manual_seed(0)
    late = {"context": [], "targets": []}
    for _ in range(20):
        (context, targets), = masks(8, generator)
        half = GRID[0] // 2 * GRID[1] * GRID[2]
        late["context"].append((context >= half).float().mean())
        late["targets"].append((targets >= half).float().mean())
    for name, shares in late.items():
        assert abs(float(torch.stack(shares).mean()) - 0.5) < 0.03, name


def test_auto_fixed_counts_are_about_the_references_batch_minimum_at_its_recipe_batch():
    """'auto' aims at what the reference keeps (the batch's smallest counts) with its 24 clips per GPU."""
    fixed = MultiBlock3DMasks(grid=GRID, fixed_counts="auto")
    varying = MultiBlock3DMasks(grid=GRID)  # the batch minimum, as the reference
    generator = torch.Generator().manual_seed(1)
    sums = torch.zeros(2, 2)
    for _ in range(40):
        counts = [[s.context.shape[1], s.targets.shape[2]] for s in varying(24, generator)]
        sums += torch.tensor(counts, dtype=torch.float)
    reference = sums / 40
    torch.testing.assert_close(torch.tensor(fixed.fixed_counts, dtype=torch.float), reference, rtol=0.2, atol=0)
    assert fixed.fixed_counts == MultiBlock3DMasks(grid=GRID, fixed_counts="auto").fixed_counts  # seeded


def test_auto_fixed_counts_leave_out_draws_the_sampler_redraws():
    """On the small default grid two long-range blocks often cover almost everything; those draws are redrawn
    for min_keep, so they must not pull the fixed context count down to min_keep."""
    masks = MultiBlock3DMasks(grid=(4, 8, 8), fixed_counts="auto")
    (_, _), (long_context, _) = masks.fixed_counts
    assert long_context > masks.min_keep


def test_fixed_counts_out_of_reach_or_malformed_are_rejected():
    with pytest.raises(ValueError, match="one .context, target. pair per mask set"):
        MultiBlock3DMasks(grid=GRID, fixed_counts=((400, 700),))
    with pytest.raises(ValueError, match="context >= min_keep"):
        MultiBlock3DMasks(grid=GRID, fixed_counts=((5, 700), (100, 1100)))
    with pytest.raises(ValueError, match="at most 1568 tokens"):
        MultiBlock3DMasks(grid=GRID, fixed_counts=((800, 800), (100, 1100)))
    # 640 context and 900 target tokens of short-range masks are each common, but both at once in under a tenth
    with pytest.raises(ValueError, match=r"fixed_counts\[0\] .* out of reach"):
        MultiBlock3DMasks(grid=GRID, fixed_counts=((640, 900), (100, 1100)))
