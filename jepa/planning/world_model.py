"""The learned world model for planning: a frozen JEPA encoder + action-conditioned predictor(s).

``encode`` turns observation images into layer-normed, pooled encoder tokens (once per planning
call for the start, once per episode for the goal); ``rollout`` imagines every sampled action
sequence in one batch, grouping ``frameskip`` environment actions into one predictor step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.ac_predictor import ACPredictor, pool_tokens
from jepa.models.vit import VisionTransformer
from jepa.planning.planners import StateCost


class FrameEncoder(nn.Module):
    """Images in [0, 1] [B, C, H, W] -> normalised -> frozen ViT -> layer norm (no affine) -> pooled [B, N, D]."""

    def __init__(self, encoder: VisionTransformer, *, mean: Sequence[float], std: Sequence[float], img_size: int,
                 pool: int) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.img_size, self.pool = img_size, pool
        side = int(round(encoder.num_tokens ** 0.5))
        self.grid = (side, side)
        self.num_tokens = pool * pool if pool else encoder.num_tokens
        self.dim = encoder.embed_dim

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.mean.shape[1], self.img_size, self.img_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(images.shape)}")
        tokens = self.encoder((images.float() - self.mean) / self.std)
        tokens = F.layer_norm(tokens, tokens.shape[-1:])
        return pool_tokens(tokens, self.grid, self.pool)


class LatentWorldModel:
    """encode: images -> [B, N, D]; rollout: start [1, N, D], actions [S, H, A] -> [S, ceil(H / frameskip), M, N, D]
    for an ensemble of M predictors.

    ``autocast``: the dtype the predictors imagine in (None: fp32). Their layers then run in it while the
    residual stream, the start features and the returned predictions stay fp32 (each predictor adds its
    predicted change to its fp32 input), as in training under ``world_model.precision``.
    """

    def __init__(self, encoder: FrameEncoder, predictors: Sequence[ACPredictor], *, frameskip: int,
                 autocast: torch.dtype | None = None) -> None:
        for p in predictors:
            if (p.feature_dim, p.num_tokens) != (encoder.dim, encoder.num_tokens):
                raise ValueError(
                    f"the predictor expects {p.num_tokens} tokens of {p.feature_dim} features but the encoder gives "
                    f"{encoder.num_tokens} of {encoder.dim}: the predictor checkpoint does not match the encoder"
                )
            if p.action_dim % frameskip:
                raise ValueError(f"predictor action_dim {p.action_dim} is not a multiple of frameskip {frameskip}")
        self.encoder, self.predictors, self.frameskip = encoder, [p.eval() for p in predictors], frameskip
        self.action_dim = predictors[0].action_dim // frameskip
        self.autocast = autocast

    def with_autocast(self, dtype: torch.dtype | None) -> LatentWorldModel:
        """The same encoder and predictors (shared, not copied), imagining in ``dtype``."""
        return LatentWorldModel(self.encoder, self.predictors, frameskip=self.frameskip, autocast=dtype)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    @torch.no_grad()
    def rollout(self, start: torch.Tensor, actions: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """Every predicted step, or with ``last_only`` only the last one ([S, 1, M, N, D])."""
        s, h, a = actions.shape
        if actions.ndim != 3 or a != self.action_dim:
            raise ValueError(f"actions must be [S, H, {self.action_dim}], got {tuple(actions.shape)}")
        pad = -h % self.frameskip  # a horizon that is not a multiple of frameskip ends with "stay" actions
        if pad:
            actions = torch.cat([actions, actions.new_zeros(s, pad, a)], dim=1)
        chunks = actions.reshape(s, (h + pad) // self.frameskip, self.frameskip * a)
        context = start.unsqueeze(1).expand(s, 1, *start.shape[1:])
        with torch.autocast(start.device.type, dtype=self.autocast) if self.autocast else nullcontext():
            preds = [p.rollout(context, chunks, last_only=last_only).float() for p in self.predictors]
        return preds[0].unsqueeze(2) if len(preds) == 1 else torch.stack(preds, dim=2)  # no copy for one


def _box_sums(tokens: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-1 ``size`` x ``size`` box sums of tokens [..., N, D] over their square grid, as a channels-last
    [B, D, side, side] grid, and how many tokens each window holds [side, side] (fewer at the borders).

    Depthwise convolutions with box kernels over the channels-last grid (1.6x faster than avg_pool2d for the
    energy's sizes here); from size 7 up a row pass then a column pass (size 9: 4.0 ms instead of 6.2 ms over
    200 grids of 13 x 13 x 64 on one thread; at 3 and 5 the single pass is faster).
    """
    n, d = tokens.shape[-2:]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"blurring needs a square token grid, got {n} tokens")
    grid = tokens.reshape(-1, side, side, d).permute(0, 3, 1, 2)
    ones = torch.ones(1, 1, side, side, dtype=tokens.dtype, device=tokens.device)
    kernels = [(size, 1), (1, size)] if size >= 7 else [(size, size)]
    for kh, kw in kernels:
        box = torch.ones(d, 1, kh, kw, dtype=tokens.dtype, device=tokens.device)
        grid = F.conv2d(grid, box.contiguous(memory_format=torch.channels_last), padding=(kh // 2, kw // 2), groups=d)
        ones = F.conv2d(ones, box[:1], padding=(kh // 2, kw // 2))
    return grid, ones[0, 0]


def blurred_l1(tokens: torch.Tensor, size: int) -> torch.Tensor:
    """The mean absolute value over tokens and features of a ``size`` x ``size`` box blur (stride 1, averaging
    only the tokens inside the grid) of tokens [..., N, D] over their square grid: -> [...]. Size 1: no blur.

    |box sum / count| = |box sum| / count, so the absolute values are summed over the features of the box sums
    and the division by the count becomes a weighted sum over the tokens: no blurred copy of the tensor.
    (``torch.linalg.vector_norm(ord=1)`` would fuse the absolute value, but took 12x as long here.)
    """
    n, d = tokens.shape[-2:]
    if size == 1:
        return tokens.abs().mean(dim=(-2, -1))
    sums, count = _box_sums(tokens, size)
    per_token = sums.abs().sum(dim=1).flatten(1)  # [B, N]; the features are innermost in memory
    return (per_token @ (1 / (count.flatten() * (n * d)))).view(tokens.shape[:-2])


def latent_cost(kind: str = "final", disagreement: float = 0.0, blur: Sequence[int] = (1,)) -> StateCost:
    """L1 energy between the ensemble-mean prediction and the goal features (last step or summed over steps),
    summed over box blurs of the token grid of the sizes in ``blur`` (1: none), plus ``disagreement`` x the
    ensemble's standard deviation at the same steps.

    Why blur: on a grid fine enough that the dot covers a few tokens, the plain L1 between two frames is the
    same wherever the dot is unless it overlaps the goal's tokens, a flat energy a planner cannot descend;
    blurred copies make the energy keep growing with the distance (the true physics seen through a 5 px-patch
    encoder plans 19/20 pinned episodes with sizes 1, 3, 5, 9, README).
    """
    if kind not in ("final", "summed"):
        raise ValueError(f"cost kind must be 'final' or 'summed', got {kind!r}")
    if not blur or any(size < 1 or size % 2 == 0 for size in blur):
        raise ValueError(f"blur sizes must be odd and >= 1, got {list(blur)}")

    def cost(pred: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        steps = pred[:, -1:] if kind == "final" else pred  # [S, h, M, N, D]
        mean = steps[:, :, 0] if steps.shape[2] == 1 else steps.mean(dim=2)  # one predictor: no copy to average
        diff = mean - goal.unsqueeze(1)  # blurring is linear: blur(pred) - blur(goal) = blur(diff)
        energy = sum(blurred_l1(diff, size) for size in blur).sum(dim=1)
        if disagreement and pred.shape[2] > 1:
            # the members' standard deviation, written out: torch.std over this middle dimension took 360 ms for
            # 300 samples of 2 x 169 x 64 on one thread, this 27 ms (the planning call 2.3 s instead of 1.2 s)
            spread = (steps - mean.unsqueeze(2)).pow(2).sum(dim=2).div(steps.shape[2] - 1).sqrt()
            energy = energy + disagreement * spread.mean(dim=(2, 3)).sum(dim=1)
        return energy

    return cost
