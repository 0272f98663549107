"""The oracle world model: the environment's own physics as a batched rollout.

It reads everything it needs from the observation image (dot centroid, wall column, door rows),
so it plugs into the same agent as a learned model; planning with it measures the planner alone.
"""

from __future__ import annotations

import torch

from jepa.planning.envs.two_rooms import MAX_NORM, OUTER_HI, OUTER_LO, SIZE, move


def read_state(obs: torch.Tensor) -> torch.Tensor:
    """Observations [B, 2, 65, 65] -> states [B, 4] = (x, y, wall_x, door_y) in pixels."""
    if obs.ndim != 4 or obs.shape[1:] != (2, SIZE, SIZE):
        raise ValueError(f"two-rooms observations are [B, 2, {SIZE}, {SIZE}], got {tuple(obs.shape)}")
    dot, wall = obs[:, 0].double(), obs[:, 1].double()
    idx = torch.arange(SIZE, dtype=torch.float64)
    mass = dot.sum(dim=(1, 2)).clamp_min(1e-12)
    x = (dot.sum(dim=1) * idx).sum(dim=1) / mass
    y = (dot.sum(dim=2) * idx).sum(dim=1) / mass
    inner = wall[:, OUTER_LO + 1:OUTER_HI, OUTER_LO + 1:OUTER_HI]
    inner_idx = idx[OUTER_LO + 1:OUTER_HI]
    columns = (inner.sum(dim=1) > 0).double()  # [B, W]: the inner wall's columns
    wall_x = (columns * inner_idx).sum(dim=1) / columns.sum(dim=1).clamp_min(1)
    door_rows = ((inner * columns.unsqueeze(1)).sum(dim=2) == 0).double()  # rows free across the wall
    door_y = (door_rows * inner_idx).sum(dim=1) / door_rows.sum(dim=1).clamp_min(1)
    return torch.stack([x, y, wall_x, door_y], dim=1)


class OracleWorldModel:
    """encode: image -> (x, y, wall_x, door_y); rollout: exact physics for [S, H, 2] actions -> [S, H, 4] states."""

    def __init__(self, max_norm: float = MAX_NORM) -> None:
        self.max_norm = max_norm

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return read_state(obs).float()

    def rollout(self, start: torch.Tensor, actions: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        if start.shape != (1, 4):
            raise ValueError(f"the oracle rolls out from one state [1, 4], got {tuple(start.shape)}")
        if actions.ndim != 3 or actions.shape[-1] != 2:
            raise ValueError(f"actions must be [S, H, 2], got {tuple(actions.shape)}")
        s, h, _ = actions.shape
        state = start.double()
        out = state.expand(s, h, 4).clone()
        pos = state[:, :2].expand(s, 2)
        wall_x, door_y = state[:, 2], state[:, 3]
        acts = actions.double()
        for t in range(h):
            pos = move(pos, acts[:, t], wall_x, door_y, self.max_norm)
            out[:, t, :2] = pos
        return out[:, -1:].float() if last_only else out.float()
