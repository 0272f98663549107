"""A local action-conditioned predictor: convolutions over the encoder's token grid, no absolute positions.

The transformer predictor (ac_predictor.py) mixes all tokens of a frame with a learned embedding per
token slot, so it can learn a different rule at every place. A sampling planner finds the places
where that rule is wrong (on the two-rooms task: plans that walk through the wall 10-40 px from the
door in imagination only, README). This predictor applies one rule everywhere: each layer is a
``kernel`` x ``kernel`` convolution over the token grid, and the action chunk scales and shifts every
layer's channels (FiLM), which lets the action decide which way features move. With a token grid fine
enough that the dot moves between tokens (5 px patches on the 65 px frame), what it learns at one
stretch of wall holds along all of it.

It is Markov (the next frame from the current one) and keeps the transformer predictor's interface
(``forward`` over [B, T, N, D] frames, ``rollout`` from context frames), so the world model, training
loop and evaluation take either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.ac_predictor import check_frames


class GridACPredictor(nn.Module):
    """feats [B, T, N, D] (N = side x side tokens, row-major), actions [B, T, A] -> next features [B, T, N, D]."""

    def __init__(self, *, feature_dim: int, action_dim: int, num_tokens: int, width: int = 32, depth: int = 3,
                 kernel: int = 3) -> None:
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"the grid predictor needs a square token grid, got {num_tokens} tokens "
                             "(use world_model.pool: 0 or a pool side, not a non-square grid)")
        if min(feature_dim, action_dim, width, depth) < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError("feature_dim, action_dim, width and depth must be >= 1 and kernel odd")
        self.feature_dim, self.action_dim, self.num_tokens, self.side = feature_dim, action_dim, num_tokens, side
        self.inp = nn.Conv2d(feature_dim + action_dim, width, 1)
        self.film = nn.ModuleList(nn.Linear(action_dim, 2 * width) for _ in range(depth))
        self.body = nn.ModuleList(nn.Conv2d(width, width, kernel, padding=kernel // 2) for _ in range(depth))
        self.out = nn.Conv2d(width, feature_dim, 1)
        nn.init.zeros_(self.out.weight)  # starts as "nothing changes", the best guess for most tokens
        nn.init.zeros_(self.out.bias)

    def step(self, grid: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """One step on the grid layout: [B, D, side, side], [B, A] -> [B, D, side, side]."""
        b = grid.shape[0]
        a = action.view(b, -1, 1, 1)
        h = self.inp(torch.cat([grid, a.expand(-1, -1, self.side, self.side)], dim=1))
        for film, conv in zip(self.film, self.body):
            scale, shift = film(action).view(b, -1, 1, 1).chunk(2, dim=1)
            h = h + F.gelu(conv(h * (1 + scale) + shift))
        return grid + self.out(h)

    def to_grid(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, D, side, side]."""
        return feats.transpose(1, 2).reshape(feats.shape[0], self.feature_dim, self.side, self.side)

    def forward(self, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every frame's successor from the true frame (teacher forcing); frames are independent."""
        check_frames(feats, actions, self.num_tokens, self.feature_dim, self.action_dim)
        b, t = feats.shape[:2]
        nxt = self.step(self.to_grid(feats.flatten(0, 1)), actions.flatten(0, 1))
        return nxt.flatten(2).transpose(1, 2).reshape(b, t, self.num_tokens, self.feature_dim)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Imagine H steps from the last context frame: context [B, C, N, D], actions [B, C - 1 + H, A]
        (the actions after each context frame, then the H planned ones) -> predicted features [B, H, N, D]."""
        b, c = context.shape[:2]
        h = actions.shape[1] - (c - 1)
        if h < 1:
            raise ValueError(f"{actions.shape[1]} actions for {c} context frames leave no step to imagine")
        check_frames(context, actions[:, :c], self.num_tokens, self.feature_dim, self.action_dim)
        grid = self.to_grid(context[:, -1])
        out = []
        for k in range(c - 1, c - 1 + h):
            grid = self.step(grid, actions[:, k])
            out.append(grid)
        return torch.stack(out, 1).flatten(3).transpose(2, 3)
