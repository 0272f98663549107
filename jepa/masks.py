"""I-JEPA multi-block masking on a patch grid.

Tokens of an (H, W) patch grid are indexed ``row * W + col``. Each call samples one
target-block shape and one context-block shape for the whole batch (so every image
yields tensors of equal size), places ``num_targets`` target blocks and one context
block per image, and removes target cells from the context so the predictor never
sees what it has to predict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

import torch


class MaskSet(NamedTuple):
    """One masking of a batch: the context tokens the encoder sees and the target tokens to predict."""

    context: torch.Tensor  # [B, Nc] int64, sorted
    targets: torch.Tensor  # [B, M, K] int64: M target blocks of K tokens, each predicted in its own pass


class MaskGenerator(Protocol):
    """Draws the mask sets of one batch; each set gets its own predictor pass and mask token."""

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskSet]: ...

# After this many failed context draws for an image, its targets are redrawn too:
# some target layouts leave too little room for any context block.
_CONTEXT_TRIES_PER_TARGET_DRAW = 5


def block_shape(grid: tuple[int, int], num_cells: int, aspect: float) -> tuple[int, int]:
    """(h, w) of a block of about ``num_cells`` cells with h / w ~ ``aspect``, clamped to the grid."""
    height, width = grid
    h = round(math.sqrt(num_cells * aspect))
    w = round(math.sqrt(num_cells / aspect))
    return min(max(h, 1), height), min(max(w, 1), width)


def reachable_block_shapes(
    grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]
) -> set[tuple[int, int]]:
    """Every (h, w) that :func:`block_shape` can return for a scale / aspect range.

    Used to reject configurations in which some drawable shape makes masking impossible,
    instead of failing at a random training step. ``h`` and ``w`` are step functions of the
    aspect, so evaluating the range ends, each rounding breakpoint and the midpoints between
    them covers every shape.
    """
    height, width = grid
    lo_a, hi_a = aspect
    shapes: set[tuple[int, int]] = set()
    for n in range(int(height * width * scale[0]), int(height * width * scale[1]) + 1):
        candidates = {lo_a, hi_a}
        if n > 0:
            for k in range(max(height, width) + 1):
                candidates.add((k + 0.5) ** 2 / n)  # h = round(sqrt(n * a)) steps here
                candidates.add(n / (k + 0.5) ** 2)  # w = round(sqrt(n / a)) steps here
        points = sorted(a for a in candidates if lo_a <= a <= hi_a)
        points += [(a + b) / 2 for a, b in zip(points, points[1:])]
        shapes.update(block_shape(grid, n, a) for a in points)
    return shapes


def _check_range(name: str, value: tuple[float, float], *, upper: float | None) -> None:
    """Reject empty, reversed or out-of-bounds ranges before they produce degenerate blocks."""
    lo, hi = value
    if not 0 < lo <= hi:
        raise ValueError(f"{name} must satisfy 0 < lo <= hi, got {value}")
    if upper is not None and hi > upper:
        raise ValueError(f"{name} must lie within (0, {upper}], got {value}")


def _place_blocks(
    shape: tuple[int, ...], block: tuple[int, int], grid: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Token indices [*shape, h*w] (raster order) of blocks at uniform top-left corners.

    Tops range over 0..H-h and lefts over 0..W-w inclusive, so every cell can be covered.
    """
    (h, w), (height, width) = block, grid
    tops = torch.randint(0, height - h + 1, shape, generator=generator)
    lefts = torch.randint(0, width - w + 1, shape, generator=generator)
    offsets = (torch.arange(h)[:, None] * width + torch.arange(w)[None, :]).flatten()
    return (tops * width + lefts).unsqueeze(-1) + offsets


def _cover(indices: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Boolean [N, num_tokens] mask of the token indices in each row of [N, M] ``indices``."""
    mask = torch.zeros(indices.shape[0], num_tokens, dtype=torch.bool)
    return mask.scatter_(1, indices, True)


def random_subsets(mask: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Sorted indices [N, size] of a uniformly random ``size``-subset of each row's True cells.

    Truncating in raster order instead would drop the bottom of the image more often.
    Each row of ``mask`` must have at least ``size`` True cells.
    """
    keys = torch.rand(mask.shape, generator=generator)
    keys.masked_fill_(~mask, 2.0)  # rand < 1, so unmasked cells sort last
    chosen = keys.sort(dim=1, stable=True).indices[:, :size]
    return chosen.sort(dim=1).values


# 'auto' token multiple: steps of 8 tokens on image grids from this size up, where the average context is
# large enough that a step of 8 is a small share of it (about 68 tokens on 14 x 14).
AUTO_TOKEN_MULTIPLE = 8
AUTO_MULTIPLE_MIN_TOKENS = 128


def token_multiple_for(choice: int | str, grid: tuple[int, ...]) -> int:
    """The token multiple for a token ``grid``: ``choice``, or for 'auto' 8 on images of at least 128 tokens,
    else 1.

    On the 196-token ViT-Tiny step (bf16, Intel Xeon with AMX) steps of 8 kept memory flat at 3.3-3.6 GB
    over 200 steps and the step at about 0.92 s, against 6.4 GB and 1.2 s (and still growing) with
    every count allowed; they drop 3.5 of 68 context tokens on average. Small grids have few distinct
    counts to begin with, and there each token is a larger share of the context. Clips get 1: V-JEPA's
    blocks span every frame, so their counts are already multiples of the T time steps (8 on 16 frames,
    where steps of 8 changed nothing) and step with whole spatial positions.
    """
    if choice == "auto":
        return AUTO_TOKEN_MULTIPLE if len(grid) == 2 and math.prod(grid) >= AUTO_MULTIPLE_MIN_TOKENS else 1
    if isinstance(choice, bool) or not isinstance(choice, int) or choice < 1:
        raise ValueError(f"token_multiple must be 'auto' or an integer >= 1, got {choice!r}")
    return choice


def round_down(count: int, multiple: int, floor: int) -> int:
    """``count`` rounded down to a multiple of ``multiple``, but not below ``min(count, floor)``.

    Token counts that vary from batch to batch give the step a new shape every time; on a CPU, oneDNN
    builds and caches new kernels per shape, which made a long bf16 run grow in memory and slow down
    (README "Performance"). Counts in steps of ``multiple`` bound the number of distinct shapes.
    """
    return max(count - count % multiple, min(count, floor))


# A fixed context count must be reachable by at least this share of draws in the worst case (largest
# target blocks, smallest context block), so that ``max_tries`` redraws practically never run out:
# 0.8 ** 100 is about 2e-10 per image.
MIN_FIXED_CONTEXT_SUCCESS = 0.2
_FEASIBILITY_DRAWS = 2000


class MultiBlockMasks:
    """Samples I-JEPA context / target token indices for a batch of images.

    Every image keeps the batch's smallest number of visible context tokens (a random subset of its
    own), rounded down to a multiple of ``token_multiple`` (never below ``min_keep``); targets are
    whole blocks. With ``context_tokens`` every image keeps exactly that many instead (images with
    fewer visible tokens are redrawn, as for ``min_keep``), so the context encoder sees one shape
    in every step: what static-shape compilation and cached CPU kernels need. ``'auto'`` takes the
    median count of the hardest layout (:meth:`worst_case_visible`) rounded down to a multiple of
    ``token_multiple``: 64 on 14 x 14 with the reference's scales and steps of 8, about the reference's
    mean batch-minimum at batch 16-128 (66 and 60).
    """

    def __init__(
        self,
        *,
        grid: tuple[int, int],
        num_targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        context_aspect: tuple[float, float] = (1.0, 1.0),
        min_keep: int = 10,
        token_multiple: int = 1,
        context_tokens: int | Literal["auto"] | None = None,
        max_tries: int = 100,
    ) -> None:
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be (H, W) with both >= 1, got {grid}")
        if num_targets < 1:
            raise ValueError(f"num_targets must be >= 1, got {num_targets}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        _check_range("target_scale", target_scale, upper=1.0)
        _check_range("context_scale", context_scale, upper=1.0)
        _check_range("target_aspect", target_aspect, upper=None)
        _check_range("context_aspect", context_aspect, upper=None)
        num_tokens = grid[0] * grid[1]
        if not 1 <= min_keep < num_tokens:
            raise ValueError(f"min_keep must satisfy 1 <= min_keep < H*W = {num_tokens}, got {min_keep}")
        if token_multiple < 1:
            raise ValueError(f"token_multiple must be >= 1, got {token_multiple}")

        largest_target = max(h * w for h, w in reachable_block_shapes(grid, target_scale, target_aspect))
        if num_tokens - largest_target < min_keep:
            raise ValueError(
                f"impossible masking settings: a target block can cover {largest_target} of the "
                f"{grid[0]}x{grid[1]}={num_tokens} tokens (target_scale={target_scale}, "
                f"target_aspect={target_aspect}), leaving fewer than min_keep={min_keep} context tokens"
            )
        smallest_context = min(h * w for h, w in reachable_block_shapes(grid, context_scale, context_aspect))
        if smallest_context < min_keep:
            raise ValueError(
                f"impossible masking settings: a context block can have as few as {smallest_context} "
                f"tokens on a {grid[0]}x{grid[1]} grid (context_scale={context_scale}, "
                f"context_aspect={context_aspect}), fewer than min_keep={min_keep}"
            )

        self.grid = (int(grid[0]), int(grid[1]))
        self.num_targets = num_targets
        self.target_scale = target_scale
        self.target_aspect = target_aspect
        self.context_scale = context_scale
        self.context_aspect = context_aspect
        self.min_keep = min_keep
        self.token_multiple = token_multiple
        self.max_tries = max_tries
        if context_tokens is not None:
            worst = self.worst_case_visible()
            if context_tokens == "auto":
                context_tokens = max(round_down(int(worst.float().median()), token_multiple, min_keep), min_keep)
            self._check_context_tokens(context_tokens, worst)
        self.context_tokens = context_tokens

    @property
    def num_tokens(self) -> int:
        """Number of patch tokens in the grid."""
        return self.grid[0] * self.grid[1]

    def worst_case_visible(self, draws: int = _FEASIBILITY_DRAWS) -> torch.Tensor:
        """Visible context counts [draws] with the largest target blocks in the smallest context block.

        The hardest layout the sampler can meet; a fixed seed keeps the check deterministic.
        """
        target = max(reachable_block_shapes(self.grid, self.target_scale, self.target_aspect),
                     key=lambda hw: hw[0] * hw[1])
        context = min(reachable_block_shapes(self.grid, self.context_scale, self.context_aspect),
                      key=lambda hw: hw[0] * hw[1])
        generator = torch.Generator().manual_seed(0)
        targets = _place_blocks((draws, self.num_targets), target, self.grid, generator)
        contexts = _place_blocks((draws,), context, self.grid, generator)
        visible = _cover(contexts, self.num_tokens) & ~_cover(targets.flatten(1), self.num_tokens)
        return visible.sum(1)

    def _check_context_tokens(self, count: int, counts: torch.Tensor) -> None:
        """Reject a fixed context count below ``min_keep`` or too rarely reached in the hardest layout
        (``counts``, from :meth:`worst_case_visible`) to redraw for."""
        if count < self.min_keep:
            raise ValueError(f"context_tokens={count} is below min_keep={self.min_keep}")
        success = float((counts >= count).float().mean())
        if success < MIN_FIXED_CONTEXT_SUCCESS:
            safe = int(counts.float().quantile(1 - MIN_FIXED_CONTEXT_SUCCESS))
            advice = (f"use at most {safe}" if safe >= self.min_keep else
                      f"even min_keep={self.min_keep} is too many; lower min_keep, num_targets or target_scale")
            raise ValueError(
                f"context_tokens={count} is too many for these masks: with the largest target blocks in the "
                f"smallest context block only {success:.0%} of draws leave that many visible tokens on the "
                f"{self.grid[0]}x{self.grid[1]} grid (need {MIN_FIXED_CONTEXT_SUCCESS:.0%} so that redraws "
                f"never run out); {advice}"
            )

    def _sample_shape(
        self, scale: tuple[float, float], aspect: tuple[float, float], generator: torch.Generator
    ) -> tuple[int, int]:
        """Draw one block shape; scale and aspect use independent uniforms."""
        u_scale, u_aspect = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        s = scale[0] + u_scale * (scale[1] - scale[0])
        a = aspect[0] + u_aspect * (aspect[1] - aspect[0])
        return block_shape(self.grid, int(self.num_tokens * s), a)

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskSet]:
        """I-JEPA uses one mask set per batch."""
        return [self.sample(batch_size, generator)]

    def sample(self, batch_size: int, generator: torch.Generator) -> MaskSet:
        """context [B, Nc] int64 and targets [B, num_targets, K] int64."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        target_shape = self._sample_shape(self.target_scale, self.target_aspect, generator)
        context_shape = self._sample_shape(self.context_scale, self.context_aspect, generator)

        def draw_targets(n: int) -> torch.Tensor:
            return _place_blocks((n, self.num_targets), target_shape, self.grid, generator)

        def draw_context(n: int) -> torch.Tensor:
            return _place_blocks((n,), context_shape, self.grid, generator)

        def visible(context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return _cover(context, self.num_tokens) & ~_cover(targets.flatten(1), self.num_tokens)

        targets, context = draw_targets(batch_size), draw_context(batch_size)
        keep = visible(context, targets)
        least = self.min_keep if self.context_tokens is None else self.context_tokens
        for attempt in range(1, self.max_tries):
            redo = (keep.sum(1) < least).nonzero().squeeze(1)
            if redo.numel() == 0:
                break
            if attempt % _CONTEXT_TRIES_PER_TARGET_DRAW == 0:
                targets[redo] = draw_targets(redo.numel())
            context[redo] = draw_context(redo.numel())
            keep[redo] = visible(context[redo], targets[redo])

        counts = keep.sum(1)
        if int(counts.min()) < least:
            (th, tw), (ch, cw) = target_shape, context_shape
            setting = "min_keep" if self.context_tokens is None else "context_tokens"
            raise ValueError(
                f"impossible masking settings: after {self.max_tries} tries, {self.num_targets} target "
                f"blocks of {th}x{tw} still cover too much of a {ch}x{cw} context block on the "
                f"{self.grid[0]}x{self.grid[1]} grid to leave {setting}={least} context tokens "
                f"(one image kept only {int(counts.min())}); lower num_targets, target_scale or {setting}"
            )
        if self.context_tokens is not None:
            return MaskSet(random_subsets(keep, self.context_tokens, generator), targets)
        kept = round_down(int(counts.min()), self.token_multiple, self.min_keep)
        return MaskSet(random_subsets(keep, kept, generator), targets)


class BlockSpec(NamedTuple):
    """One V-JEPA mask set: ``num_blocks`` spatio-temporal blocks whose union is predicted."""

    num_blocks: int
    spatial_scale: tuple[float, float]
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect: tuple[float, float] = (0.75, 1.5)


SHORT_RANGE = BlockSpec(8, (0.15, 0.15))
LONG_RANGE = BlockSpec(2, (0.7, 0.7))


def _place_tubes(
    n: int, spec_shape: tuple[int, int, int], grid: tuple[int, int, int], count: int, generator: torch.Generator
) -> torch.Tensor:
    """Token indices [n, count * t*h*w] of ``count`` blocks per sample at uniform (inclusive) positions."""
    (t, h, w), (gt, gh, gw) = spec_shape, grid
    starts = torch.randint(0, gt - t + 1, (n, count), generator=generator)
    tops = torch.randint(0, gh - h + 1, (n, count), generator=generator)
    lefts = torch.randint(0, gw - w + 1, (n, count), generator=generator)
    offsets = (
        torch.arange(t)[:, None, None] * gh * gw + torch.arange(h)[None, :, None] * gw + torch.arange(w)[None, None, :]
    ).flatten()
    corners = starts * gh * gw + tops * gw + lefts
    return (corners.unsqueeze(-1) + offsets).flatten(1)


# 'auto' fixed counts on clips: each mask set keeps the 5th percentile of its own visible and masked counts.
# V-JEPA's visible counts spread far wider than I-JEPA's (eight blocks overlap at random), and the reference
# keeps each batch's minimum, about this quantile at its recipe's 24 clips per GPU.
AUTO_CLIP_COUNT_QUANTILE = 0.05


class MultiBlock3DMasks:
    """V-JEPA multi-block masks on a (T, H, W) token grid: one mask set per :class:`BlockSpec`.

    Each set masks the union of its blocks (same block shape across the batch,
    positions per clip); the context is everything else. Counts are equalised
    across the batch by random subsets, like the 2-D masks, and both the context and
    the target counts are rounded down to a multiple of ``token_multiple``.

    ``fixed_counts`` gives each mask set one (context, target) count for every batch instead (clips with
    fewer visible or masked tokens are redrawn), so the step has the same shapes every time: bounded
    oneDNN kernels on a CPU, static graphs for ``torch.compile``. ``'auto'`` takes
    :data:`AUTO_CLIP_COUNT_QUANTILE` of each set's own draws (:meth:`auto_counts`).
    """

    def __init__(
        self,
        *,
        grid: tuple[int, int, int],
        specs: tuple[BlockSpec, ...] = (SHORT_RANGE, LONG_RANGE),
        min_keep: int = 10,
        token_multiple: int = 1,
        fixed_counts: Sequence[tuple[int, int]] | Literal["auto"] | None = None,
        max_tries: int = 100,
    ) -> None:
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"grid must be (T, H, W) with all >= 1, got {grid}")
        if not specs:
            raise ValueError("at least one BlockSpec is needed")
        for spec in specs:
            if spec.num_blocks < 1:
                raise ValueError(f"num_blocks must be >= 1, got {spec}")
            _check_range("spatial_scale", spec.spatial_scale, upper=1.0)
            _check_range("temporal_scale", spec.temporal_scale, upper=1.0)
            _check_range("aspect", spec.aspect, upper=None)
        if not 1 <= min_keep < grid[0] * grid[1] * grid[2]:
            raise ValueError(f"min_keep must satisfy 1 <= min_keep < T*H*W = {grid[0] * grid[1] * grid[2]}")
        if token_multiple < 1:
            raise ValueError(f"token_multiple must be >= 1, got {token_multiple}")
        self.grid = tuple(int(g) for g in grid)
        self.specs = tuple(specs)
        self.min_keep = min_keep
        self.token_multiple = token_multiple
        self.max_tries = max_tries
        if fixed_counts == "auto":
            fixed_counts = [self.auto_counts(spec) for spec in self.specs]
        if fixed_counts is not None:
            fixed_counts = tuple((int(c), int(t)) for c, t in fixed_counts)
            self._check_fixed_counts(fixed_counts)
        self.fixed_counts: tuple[tuple[int, int], ...] | None = fixed_counts

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def reachable_shapes(self, spec: BlockSpec) -> set[tuple[int, int, int]]:
        """Every (t, h, w) block that :meth:`_shape` can draw for ``spec``."""
        frames = self.grid[0]
        times = range(max(1, int(frames * spec.temporal_scale[0])), max(1, int(frames * spec.temporal_scale[1])) + 1)
        spatial = reachable_block_shapes(self.grid[1:], spec.spatial_scale, spec.aspect)
        return {(t, h, w) for t in times for h, w in spatial}

    def _masked(self, spec: BlockSpec, shape: tuple[int, int, int], n: int, generator: torch.Generator) -> torch.Tensor:
        """Boolean [n, T*H*W]: the union of ``spec.num_blocks`` blocks of ``shape`` per clip."""
        return _cover(_place_tubes(n, shape, self.grid, spec.num_blocks, generator), self.num_tokens)

    def auto_counts(self, spec: BlockSpec, draws: int = _FEASIBILITY_DRAWS) -> tuple[int, int]:
        """(context, target) counts for ``spec``: the :data:`AUTO_CLIP_COUNT_QUANTILE` of the visible and of the
        masked counts over ``draws`` clips drawn as the sampler draws them (seeded, so deterministic), leaving
        out those it would redraw for ``min_keep``."""
        generator = torch.Generator().manual_seed(0)
        shapes = [self._shape(spec, generator) for _ in range(draws)]
        masked = torch.cat([self._masked(spec, shape, shapes.count(shape), generator) for shape in sorted(set(shapes))])
        masked = masked[(~masked).sum(1) >= self.min_keep]  # the sampler redraws the others
        quantile = torch.tensor(AUTO_CLIP_COUNT_QUANTILE, dtype=torch.float64)
        visible = int((~masked).sum(1).double().quantile(quantile, interpolation="lower"))
        targets = int(masked.sum(1).double().quantile(quantile, interpolation="lower"))
        return max(visible, self.min_keep), max(targets, 1)

    def _check_fixed_counts(self, counts: tuple[tuple[int, int], ...]) -> None:
        """Reject counts that are malformed, or that some drawable block shape reaches too rarely to redraw for."""
        if len(counts) != len(self.specs):
            raise ValueError(f"fixed_counts needs one (context, target) pair per mask set ({len(self.specs)}), "
                             f"got {len(counts)}")
        generator = torch.Generator().manual_seed(0)
        for index, (spec, (context, targets)) in enumerate(zip(self.specs, counts)):
            if context < self.min_keep or targets < 1 or context + targets > self.num_tokens:
                raise ValueError(f"fixed_counts[{index}] = ({context}, {targets}) must have context >= min_keep="
                                 f"{self.min_keep}, targets >= 1 and at most {self.num_tokens} tokens in all")
            for shape in sorted(self.reachable_shapes(spec)):
                masked = self._masked(spec, shape, _FEASIBILITY_DRAWS // 4, generator)
                success = float((((~masked).sum(1) >= context) & (masked.sum(1) >= targets)).float().mean())
                if success < MIN_FIXED_CONTEXT_SUCCESS:
                    raise ValueError(
                        f"fixed_counts[{index}] = ({context} context, {targets} target tokens) is out of reach: "
                        f"{spec.num_blocks} blocks of {shape[0]}x{shape[1]}x{shape[2]} on the {self.grid} grid leave "
                        f"both in only {success:.0%} of draws (need {MIN_FIXED_CONTEXT_SUCCESS:.0%} so that redraws "
                        "never run out); lower them"
                    )

    def _shape(self, spec: BlockSpec, generator: torch.Generator) -> tuple[int, int, int]:
        u_time, u_space, u_aspect = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        t_scale = spec.temporal_scale[0] + u_time * (spec.temporal_scale[1] - spec.temporal_scale[0])
        s_scale = spec.spatial_scale[0] + u_space * (spec.spatial_scale[1] - spec.spatial_scale[0])
        aspect = spec.aspect[0] + u_aspect * (spec.aspect[1] - spec.aspect[0])
        h, w = block_shape(self.grid[1:], int(self.grid[1] * self.grid[2] * s_scale), aspect)
        return max(1, int(self.grid[0] * t_scale)), h, w

    def _sample_set(self, spec: BlockSpec, counts: tuple[int, int] | None, batch_size: int,
                    generator: torch.Generator) -> MaskSet:
        shape = self._shape(spec, generator)
        least_context, least_targets = counts if counts is not None else (self.min_keep, 1)
        masked = self._masked(spec, shape, batch_size, generator)

        def short(masked: torch.Tensor) -> torch.Tensor:
            return ((~masked).sum(1) < least_context) | (masked.sum(1) < least_targets)

        for _ in range(1, self.max_tries):
            redo = short(masked).nonzero().squeeze(1)
            if redo.numel() == 0:
                break
            masked[redo] = self._masked(spec, shape, redo.numel(), generator)
        if bool(short(masked).any()):
            setting = (f"min_keep={self.min_keep} context tokens" if counts is None else
                       f"the fixed {least_context} context and {least_targets} target tokens")
            raise ValueError(
                f"impossible masking settings: after {self.max_tries} tries, {spec.num_blocks} blocks of "
                f"{shape[0]}x{shape[1]}x{shape[2]} tokens still leave fewer than {setting} on the {self.grid} grid; "
                "lower num_blocks, spatial_scale or min_keep"
            )
        visible = ~masked
        if counts is not None:
            return MaskSet(random_subsets(visible, least_context, generator),
                           random_subsets(masked, least_targets, generator).unsqueeze(1))
        kept = round_down(int(visible.sum(1).min()), self.token_multiple, self.min_keep)
        context = random_subsets(visible, kept, generator)
        targets = random_subsets(masked, round_down(int(masked.sum(1).min()), self.token_multiple, 1), generator)
        return MaskSet(context, targets.unsqueeze(1))

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskSet]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        counts = self.fixed_counts or (None,) * len(self.specs)
        return [self._sample_set(spec, count, batch_size, generator) for spec, count in zip(self.specs, counts)]


class RandomTubeMasks:
    """Tube masking: the same random ``ratio`` of spatial positions is masked in every frame."""

    def __init__(self, *, grid: tuple[int, int, int], ratio: float = 0.9) -> None:
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"grid must be (T, H, W) with all >= 1, got {grid}")
        spatial = grid[1] * grid[2]
        self.num_masked = round(ratio * spatial)
        if not 0 < self.num_masked < spatial:
            raise ValueError(f"ratio {ratio} masks {self.num_masked} of {spatial} positions; it must leave some of each")
        self.grid = tuple(int(g) for g in grid)

    def __call__(self, batch_size: int, generator: torch.Generator) -> list[MaskSet]:
        t, h, w = self.grid
        order = torch.rand(batch_size, h * w, generator=generator).argsort(dim=1)
        masked = torch.zeros(batch_size, h * w, dtype=torch.bool).scatter_(1, order[:, : self.num_masked], True)
        masked = masked.repeat(1, t)  # tokens are ordered t -> h -> w
        positions = torch.arange(t * h * w).expand(batch_size, -1)
        targets = positions[masked].reshape(batch_size, -1)
        context = positions[~masked].reshape(batch_size, -1)
        return [MaskSet(context, targets.unsqueeze(1))]
