"""Property tests for I-JEPA multi-block masking."""

from __future__ import annotations

import math
import time

import pytest
import torch

from jepa.masks import (MultiBlockMasks, block_shape, random_subsets, reachable_block_shapes, round_down,
                        token_multiple_for)

NUM_BATCHES = 200
BATCH_SIZE = 32

# 14x14: ViT patch 16 on 224 px; 7x7: the small config (28 px, patch 4); 6x10 catches row/col
# mix-ups; min_keep=15 on 7x7 forces many context/target redraws.
CONFIGS = {
    "14x14": dict(grid=(14, 14)),
    "7x7": dict(grid=(7, 7)),
    "6x10": dict(grid=(6, 10)),
    "7x7-tight": dict(grid=(7, 7), min_keep=15),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def sampled(request: pytest.FixtureRequest) -> tuple[MultiBlockMasks, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Many batches from one seeded generator, shared by the property tests."""
    masks = MultiBlockMasks(**CONFIGS[request.param])
    generator = torch.Generator().manual_seed(1234)
    return masks, [masks.sample(BATCH_SIZE, generator) for _ in range(NUM_BATCHES)]


def test_shapes_dtypes_and_index_ranges(sampled) -> None:
    masks, batches = sampled
    for context, targets in batches:
        assert context.dtype == torch.int64 and targets.dtype == torch.int64
        assert context.ndim == 2 and context.shape[0] == BATCH_SIZE
        assert targets.ndim == 3 and targets.shape[:2] == (BATCH_SIZE, masks.num_targets)
        assert context.shape[1] >= masks.min_keep
        for idx in (context, targets):
            assert int(idx.min()) >= 0 and int(idx.max()) < masks.num_tokens
        # Strictly increasing rows: sorted and free of duplicates.
        assert (context.diff(dim=1) > 0).all()


def test_context_and_targets_are_disjoint(sampled) -> None:
    masks, batches = sampled
    for context, targets in batches:
        in_context = torch.zeros(BATCH_SIZE, masks.num_tokens, dtype=torch.bool).scatter_(1, context, True)
        assert not in_context.gather(1, targets.flatten(1)).any()


def _area_bounds(masks: MultiBlockMasks) -> tuple[float, float]:
    """Area range implied by n = int(H*W*s), h = round(sqrt(n*a)), w = round(sqrt(n/a))."""
    height, width = masks.grid
    lo_s, hi_s = masks.target_scale
    n_lo, n_hi = int(height * width * lo_s), int(height * width * hi_s)

    def slack(n: int) -> float:
        # |h - sqrt(na)| <= 1/2 and |w - sqrt(n/a)| <= 1/2; sqrt(na) + sqrt(n/a) peaks at an end of the range.
        return 0.5 * max(math.sqrt(n * a) + math.sqrt(n / a) for a in masks.target_aspect)

    # The bounds assume no clamping to the grid; make sure the configuration never clamps.
    assert math.sqrt(n_hi * masks.target_aspect[1]) + 0.5 <= height
    assert math.sqrt(n_hi / masks.target_aspect[0]) + 0.5 <= width
    return n_lo - slack(n_lo) + 0.25, n_hi + slack(n_hi) + 0.25


def _aspect_bounds(masks: MultiBlockMasks) -> tuple[float, float]:
    """h / w range allowing for rounding; the slack is largest for the smallest block."""
    n = int(masks.num_tokens * masks.target_scale[0])
    lo_a, hi_a = masks.target_aspect
    lower = (math.sqrt(n * lo_a) - 0.5) / (math.sqrt(n / lo_a) + 0.5)
    upper = (math.sqrt(n * hi_a) + 0.5) / (math.sqrt(n / hi_a) - 0.5)
    return lower, upper


def test_targets_are_rectangles_within_configured_sizes(sampled) -> None:
    masks, batches = sampled
    width = masks.grid[1]
    min_area, max_area = _area_bounds(masks)
    min_aspect, max_aspect = _aspect_bounds(masks)
    reachable = reachable_block_shapes(masks.grid, masks.target_scale, masks.target_aspect)
    for _, targets in batches:
        rows, cols = targets // width, targets % width
        tops, lefts = rows.amin(-1), cols.amin(-1)
        heights, widths = rows.amax(-1) - tops + 1, cols.amax(-1) - lefts + 1
        # One block shape per batch.
        assert heights.unique().numel() == 1 and widths.unique().numel() == 1
        h, w = int(heights[0, 0]), int(widths[0, 0])
        assert h * w == targets.shape[-1]
        offsets = (torch.arange(h)[:, None] * width + torch.arange(w)).flatten()
        # Equality with the raster-ordered rectangle at the bounding box corner: contiguous, complete, ordered.
        assert torch.equal(targets, (tops * width + lefts).unsqueeze(-1) + offsets)
        assert min_area <= h * w <= max_area
        assert min_aspect <= h / w <= max_aspect
        assert (h, w) in reachable


def test_scale_and_aspect_are_drawn_independently(sampled) -> None:
    masks, batches = sampled
    width = masks.grid[1]
    # Shapes reachable when one uniform drives both scale and aspect (large blocks always tallest).
    lo_s, hi_s = masks.target_scale
    lo_a, hi_a = masks.target_aspect
    steps = [i / 2_000 for i in range(2_001)]
    coupled = {
        block_shape(masks.grid, int(masks.num_tokens * (lo_s + u * (hi_s - lo_s))), lo_a + u * (hi_a - lo_a))
        for u in steps
    }
    observed = set()
    for _, targets in batches:
        rows, cols = targets[0, 0] // width, targets[0, 0] % width
        observed.add((int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1))
    assert observed - coupled


def test_every_cell_is_a_target_including_last_row_and_column(sampled) -> None:
    masks, batches = sampled
    height, width = masks.grid
    hits = sum(torch.bincount(targets.flatten(), minlength=masks.num_tokens) for _, targets in batches)
    hits = hits.view(height, width)
    # Blocks must be able to touch the bottom and right edges (an exclusive randint bound cannot).
    assert (hits[-1, :] > 0).all(), f"last row never targeted: {hits[-1].tolist()}"
    assert (hits[:, -1] > 0).all(), f"last column never targeted: {hits[:, -1].tolist()}"
    assert (hits > 0).all()


def test_context_is_not_biased_towards_the_top(sampled) -> None:
    masks, batches = sampled
    height, width = masks.grid
    context = torch.cat([c.flatten() for c, _ in batches])
    # Masks are symmetric under flips, so the expected mean is the grid centre. Standard errors are
    # ~0.02 rows; keeping the first Nc context indices in raster order shifts the mean row by about
    # -1.8 (14x14) and -0.9 (7x7) rows.
    tolerance = 0.1
    assert abs((context // width).double().mean().item() - (height - 1) / 2) < tolerance
    assert abs((context % width).double().mean().item() - (width - 1) / 2) < tolerance


def test_random_subsets_picks_sorted_subsets_of_true_cells() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 30, generator=generator) < 0.5
    mask[:, :8] = True
    picked = random_subsets(mask, 8, generator)
    assert picked.shape == (64, 8)
    assert mask.gather(1, picked).all()
    assert (picked.diff(dim=1) > 0).all()
    # Not simply the first True cells in raster order.
    assert not torch.equal(picked, torch.arange(8).expand(64, 8))
    full = random_subsets(mask[:1], int(mask[0].sum()), generator)
    assert torch.equal(full[0], mask[0].nonzero().squeeze(1))


def test_same_seed_same_masks_and_different_seed_different_masks() -> None:
    masks = MultiBlockMasks(grid=(14, 14))

    def run(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        return [masks.sample(16, generator) for _ in range(5)]

    first, again, other = run(7), run(7), run(8)
    for (c1, t1), (c2, t2) in zip(first, again):
        assert torch.equal(c1, c2) and torch.equal(t1, t2)
    assert any(
        c1.shape != c3.shape or t1.shape != t3.shape or not torch.equal(c1, c3) or not torch.equal(t1, t3)
        for (c1, t1), (c3, t3) in zip(first, other)
    )


def test_num_tokens() -> None:
    assert MultiBlockMasks(grid=(6, 10)).num_tokens == 60


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(grid=(0, 7)), "grid"),
        (dict(grid=(7, 0)), "grid"),
        (dict(num_targets=0), "num_targets"),
        (dict(max_tries=0), "max_tries"),
        (dict(min_keep=0), "min_keep"),
        (dict(min_keep=49), "min_keep"),
        (dict(token_multiple=0), "token_multiple"),
        (dict(target_scale=(0.2, 0.15)), "target_scale"),
        (dict(target_scale=(0.0, 0.2)), "target_scale"),
        (dict(target_scale=(0.5, 1.2)), "target_scale"),
        (dict(context_scale=(1.0, 0.85)), "context_scale"),
        (dict(target_aspect=(1.5, 0.75)), "target_aspect"),
        (dict(target_aspect=(0.0, 1.5)), "target_aspect"),
        (dict(context_aspect=(-1.0, 1.0)), "context_aspect"),
        # A 7x7 target block leaves no room for 10 context tokens.
        (dict(target_scale=(0.9, 1.0), num_targets=4, min_keep=10), "impossible.*target block.*min_keep=10"),
        # A 2x2 context block can never hold 10 tokens.
        (dict(context_scale=(0.1, 1.0)), "impossible.*context block.*min_keep=10"),
    ],
)
def test_invalid_settings_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiBlockMasks(**{"grid": (7, 7), **kwargs})


def test_settings_impossible_in_practice_raise_at_call() -> None:
    # 50 targets of 5x5 on a 7x7 grid almost surely cover more than 39 cells.
    masks = MultiBlockMasks(
        grid=(7, 7), num_targets=50, target_scale=(0.5, 0.5), target_aspect=(1.0, 1.0),
        context_scale=(1.0, 1.0), min_keep=10, max_tries=20,
    )
    with pytest.raises(ValueError, match="impossible.*20 tries.*50 target blocks of 5x5.*min_keep=10"):
        masks.sample(8, torch.Generator().manual_seed(0))


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        MultiBlockMasks(grid=(7, 7)).sample(0, torch.Generator().manual_seed(0))


def test_batch_256_on_14x14_is_fast() -> None:
    masks = MultiBlockMasks(grid=(14, 14))
    generator = torch.Generator().manual_seed(0)
    masks.sample(256, generator)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        masks.sample(256, generator)
        timings.append(time.perf_counter() - start)
    # The best of several calls is robust to a busy machine; a typical call takes a few ms.
    assert min(timings) < 0.020, f"best call took {min(timings) * 1e3:.1f} ms"


def test_call_gives_one_mask_set_per_batch() -> None:
    masks = MultiBlockMasks(grid=(7, 7))
    (mask_set,) = masks(4, torch.Generator().manual_seed(0))
    again = masks.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(mask_set.context, again.context) and torch.equal(mask_set.targets, again.targets)


@pytest.mark.parametrize(("count", "multiple", "floor", "expected"), [
    (83, 8, 10, 80), (80, 8, 10, 80), (15, 8, 10, 10), (7, 8, 10, 7), (83, 1, 10, 83), (83, 4, 10, 80),
])
def test_round_down(count: int, multiple: int, floor: int, expected: int) -> None:
    assert round_down(count, multiple, floor) == expected


def test_token_multiple_auto_is_8_from_128_image_tokens_and_1_on_clips_and_explicit_values_pass() -> None:
    images = [(7, 7), (8, 15), (8, 16), (14, 14)]
    assert [token_multiple_for("auto", grid) for grid in images] == [1, 1, 8, 8]
    clips = [(4, 8, 8), (4, 16, 16), (8, 14, 14)]
    assert [token_multiple_for("auto", grid) for grid in clips] == [1, 1, 1]  # see tests/test_masks_3d.py
    assert token_multiple_for(4, (7, 7)) == 4
    for bad in (0, -8, "8", True):
        with pytest.raises(ValueError, match="token_multiple"):
            token_multiple_for(bad, (14, 14))


def test_token_multiple_keeps_a_random_subset_of_the_unrounded_context() -> None:
    """Same seed: every draw is the same up to the context's size, so the rounded context is the
    first ``round_down(n)`` of the same random order (a subset) and the targets are identical."""
    plain, rounded = MultiBlockMasks(grid=(14, 14)), MultiBlockMasks(grid=(14, 14), token_multiple=8)
    g_plain, g_rounded = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    counts = set()
    for _ in range(100):
        a, b = plain.sample(16, g_plain), rounded.sample(16, g_rounded)
        assert torch.equal(a.targets, b.targets)
        n = a.context.shape[1]
        assert b.context.shape[1] == round_down(n, 8, plain.min_keep)
        for full, kept in zip(a.context.tolist(), b.context.tolist()):
            assert set(kept) <= set(full) and kept == sorted(kept)
        counts.add(b.context.shape[1])
    assert all(c % 8 == 0 or c == plain.min_keep for c in counts)
    assert len(counts) <= 16  # 10..152 in steps of 8; without rounding, about 50 distinct counts


def test_fixed_context_keeps_exactly_that_many_visible_tokens_every_batch() -> None:
    masks = MultiBlockMasks(grid=(14, 14), context_tokens=64)
    generator = torch.Generator().manual_seed(3)
    for batch in (1, 16, 64):
        for _ in range(20):
            context, targets = masks.sample(batch, generator)
            assert context.shape == (batch, 64) and (context.diff(dim=1) > 0).all()
            in_context = torch.zeros(batch, masks.num_tokens, dtype=torch.bool).scatter_(1, context, True)
            assert not in_context.gather(1, targets.flatten(1)).any()


def test_fixed_context_is_a_uniform_subset_of_the_visible_tokens() -> None:
    """Same seed as a plain sampler with min_keep raised to the count: the same layouts are drawn (the
    redraw rule is the same), so the fixed context is a subset of the plain one, and a visible cell is
    kept with probability count / visible: the top and bottom halves of the grid get their expected
    share (raster-order truncation would favour the top)."""
    plain = MultiBlockMasks(grid=(14, 14), min_keep=64)
    fixed = MultiBlockMasks(grid=(14, 14), context_tokens=64)
    g_plain, g_fixed = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    expected, kept = torch.zeros(196), torch.zeros(196)
    for _ in range(300):
        a, b = plain.sample(1, g_plain), fixed.sample(1, g_fixed)
        assert torch.equal(a.targets, b.targets) and set(b.context[0].tolist()) <= set(a.context[0].tolist())
        expected[a.context[0]] += 64 / a.context.shape[1]
        kept[b.context[0]] += 1
    top, bottom = slice(0, 98), slice(98, 196)
    for half in (top, bottom):
        assert abs(float(kept[half].sum() / expected[half].sum()) - 1) < 0.03


def test_fixed_context_must_be_reachable_with_the_largest_targets_in_the_smallest_context() -> None:
    masks = MultiBlockMasks(grid=(14, 14))
    worst = masks.worst_case_visible().float()
    # 4 blocks of 6x7 = 42 cells in a 13x13 = 169-cell context: at least 169 - 4 * 42 = 1 visible,
    # at most 169 - 42 = 127 (all four blocks on the same cells).
    assert 1 <= worst.min() and worst.max() <= 127
    safe = int(worst.quantile(0.8))
    MultiBlockMasks(grid=(14, 14), context_tokens=safe)
    with pytest.raises(ValueError, match=f"context_tokens={safe + 8} is too many.*use at most {safe}"):
        MultiBlockMasks(grid=(14, 14), context_tokens=safe + 8)
    with pytest.raises(ValueError, match="context_tokens=8 is below min_keep=10"):
        MultiBlockMasks(grid=(14, 14), context_tokens=8)


def test_auto_fixed_context_is_the_hardest_layouts_median_in_token_steps() -> None:
    median = int(MultiBlockMasks(grid=(14, 14)).worst_case_visible().float().median())
    assert MultiBlockMasks(grid=(14, 14), context_tokens="auto").context_tokens == median
    assert MultiBlockMasks(grid=(14, 14), token_multiple=8, context_tokens="auto").context_tokens == 64
    assert MultiBlockMasks(grid=(7, 7), context_tokens="auto").context_tokens >= 10  # never below min_keep
