"""Trajectory data: random exploration in two-rooms, and a generic shard schema for any agent's logs.

A trajectory is ``frames`` uint8 [T, C, H, W], ``actions`` float32 [T - 1, A] (action t moves frame t
to frame t + 1) and optionally ``state`` float32 [T, S] (proprioception; here the dot position).
Shards are webdataset tars written through :class:`jepa.data.shard_writer.ShardWriter`'s atomic
shard and manifest handling: one sample is ``{key}.frames.npy``, ``{key}.actions.npy``, optionally
``{key}.state.npy``, and ``{key}.json`` (free metadata). Fill them from your own robot logs with
:class:`TrajectoryShardWriter` and the predictor trains on them unchanged.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import webdataset as wds

from jepa.data.shard_writer import MANIFEST, ShardWriter, _member_bytes, write_json_atomic
from jepa.data.shards import shard_urls
from jepa.planning.envs import two_rooms as tr

FORMAT = "jepa-trajectory-shards"
VERSION = 1


@dataclass(frozen=True)
class Trajectory:
    """frames uint8 [T, C, H, W], actions float32 [T - 1, A], state float32 [T, S] or None."""

    frames: np.ndarray
    actions: np.ndarray
    state: np.ndarray | None = None

    def __post_init__(self) -> None:
        f, a, s = self.frames, self.actions, self.state
        if f.ndim != 4 or f.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, C, H, W], got {f.dtype} {f.shape}")
        if a.ndim != 2 or a.shape[0] != f.shape[0] - 1:
            raise ValueError(f"actions must be [T - 1, A] = [{f.shape[0] - 1}, A] for {f.shape[0]} frames, got {a.shape}")
        if s is not None and (s.ndim != 2 or s.shape[0] != f.shape[0]):
            raise ValueError(f"state must be [T, S] = [{f.shape[0]}, S], got {s.shape}")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


class TrajectoryShardWriter(ShardWriter):
    """Trajectories into size-bounded shards with a manifest (the video writer's atomic machinery)."""

    def __init__(self, out_dir: str | Path, *, prefix: str = "traj", max_samples: int | None = 256,
                 overwrite: bool = False) -> None:
        super().__init__(out_dir, prefix=prefix, max_samples=max_samples, max_bytes=None, overwrite=overwrite)

    def write_trajectory(self, key: str, traj: Trajectory, meta: dict | None = None) -> None:
        if self.manifest is not None:
            raise RuntimeError("the writer is closed")
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r}")
        sample = {"__key__": key, "frames.npy": _npy(traj.frames), "actions.npy": _npy(traj.actions.astype(np.float32)),
                  "json": json.dumps(meta or {}).encode()}
        if traj.state is not None:
            sample["state.npy"] = _npy(traj.state.astype(np.float32))
        if self._tar is not None and self._count >= self.max_samples:
            self._finish_shard()
        if self._tar is None:
            self._open_shard()
        self._tar.write(sample)
        self._keys.add(key)
        self._count += 1
        self._bytes += sum(_member_bytes(len(v)) for k, v in sample.items() if k != "__key__")

    def close(self) -> dict:
        if self.manifest is not None:
            return self.manifest
        if self._tar is not None:
            self._finish_shard()
        self.manifest = {"format": FORMAT, "version": VERSION, "num_samples": self.num_samples, "shards": self.shards}
        write_json_atomic(self.out_dir / MANIFEST, self.manifest)
        return self.manifest


def read_trajectories(folder: str | Path) -> Iterator[Trajectory]:
    """Every trajectory of a shard folder, in order."""
    manifest = Path(folder) / MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("format") != FORMAT:
        raise ValueError(f"{folder} holds {json.loads(manifest.read_text()).get('format')!r} shards, not trajectories")
    for sample in wds.WebDataset(shard_urls(folder), shardshuffle=False, empty_check=False).decode():
        if "frames.npy" not in sample or "actions.npy" not in sample:
            raise ValueError(f"sample {sample.get('__key__')} lacks frames.npy or actions.npy")
        yield Trajectory(sample["frames.npy"], sample["actions.npy"], sample.get("state.npy"))


def trajectory_frames(folder: str | Path, stride: int = 4) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
    """Every ``stride``-th frame of every trajectory as uint8 [N, C, H, W] for encoder pretraining, with
    labels (0/1: the left/right half of the image, from the state when there is one) and per-channel
    mean and std on the [0, 1] scale."""
    frames, labels = [], []
    for traj in read_trajectories(folder):
        frames.append(torch.from_numpy(traj.frames[::stride]))
        x = traj.state[::stride, 0] if traj.state is not None else np.zeros(len(frames[-1]))
        labels.append(torch.from_numpy((x > traj.frames.shape[-1] / 2).astype(np.int64)))
    if not frames:
        raise ValueError(f"{folder} holds no trajectories")
    images = torch.cat(frames)
    sample = images[:: max(1, len(images) // 2000)].float() / 255
    mean = tuple(float(m) for m in sample.mean(dim=(0, 2, 3)))
    std = tuple(max(float(s), 1e-3) for s in sample.std(dim=(0, 2, 3)))
    return images, torch.cat(labels), mean, std


@dataclass(frozen=True)
class ExplorationConfig:
    """Random exploration like the reference: heading with von Mises noise, truncated-normal step lengths."""

    kappa: float = 5.0
    step_mean: float = 1.0
    step_std: float = 0.4
    step_range: tuple[float, float] = (0.2, 1.8)
    door_fraction: float = 1 / 3  # trajectories steered through the door
    held_fraction: float = 0.0  # trajectories of uniform random actions each held ``hold`` steps (a planner's kind)
    hold: int = 10
    held_bound: float = 1.75  # per-axis bound of the held actions
    contact_fraction: float = 0.0  # held runs that start pressed against the inner wall and keep leaning into it
    outer_contact_fraction: float = 0.0  # the same against an outer wall, or a corner with the inner wall


def _truncated_normal(rng: np.random.Generator, mean: float, std: float, lo: float, hi: float, n: int) -> np.ndarray:
    out = rng.normal(mean, std, n)
    bad = (out < lo) | (out > hi)
    while bad.any():
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out


def explore(episodes: list[tr.Episode], steps: int, rng: np.random.Generator, steer: np.ndarray,
            cfg: ExplorationConfig = ExplorationConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Positions [N, steps + 1, 2] and actions [N, steps, 2] of exploration runs from each episode's start, batched.

    The heading drifts by von Mises noise; a blocked move turns it to a fresh random direction. Runs with
    ``steer`` aim the heading (with the same noise) at the door, through it, then wander in the other room.
    """
    n = len(episodes)
    wall_x, door_y = tr.layout_tensors([e.layout for e in episodes])
    pos = np.array([e.start for e in episodes], dtype=np.float64)
    side = np.array([tr.room_of(e.start[0], e.layout) for e in episodes], dtype=np.float64)
    waypoints = np.stack([
        np.stack([wall_x.numpy() + side * 3.5, door_y.numpy()], axis=1),
        np.stack([wall_x.numpy() - side * 6.0, door_y.numpy()], axis=1),
    ], axis=1)  # [N, 2, 2]
    stage = np.where(steer, 0, 2)  # next waypoint; 2 = free wandering
    lengths = _truncated_normal(rng, cfg.step_mean, cfg.step_std, *cfg.step_range, n * steps).reshape(n, steps)
    heading = rng.uniform(-math.pi, math.pi, n)
    positions = np.empty((n, steps + 1, 2))
    actions = np.empty((n, steps, 2), dtype=np.float32)
    positions[:, 0] = pos
    rows = np.arange(n)
    for t in range(steps):
        target = waypoints[rows, np.minimum(stage, 1)]
        reached = (stage < 2) & (np.linalg.norm(target - pos, axis=1) < 1.5)
        stage = stage + reached
        target = waypoints[rows, np.minimum(stage, 1)]
        aim = np.arctan2(target[:, 1] - pos[:, 1], target[:, 0] - pos[:, 0])
        heading = np.where(stage < 2, aim, heading) + rng.vonmises(0.0, cfg.kappa, n)
        action = lengths[:, t, None] * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        new = tr.move(torch.from_numpy(pos), torch.from_numpy(action), wall_x, door_y).numpy()
        blocked = np.linalg.norm(new - pos, axis=1) < 0.5 * lengths[:, t]
        heading = np.where(blocked, rng.uniform(-math.pi, math.pi, n), heading)
        pos = new
        positions[:, t + 1] = pos
        actions[:, t] = action
    return positions, actions


def held_actions(episodes: list[tr.Episode], steps: int, rng: np.random.Generator, hold: int,
                 bound: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions [N, steps + 1, 2] and actions [N, steps, 2] of runs whose actions are uniform in the box
    [-bound, bound]^2, each held ``hold`` steps: what a sampling planner with held actions tries, including
    long pushes along walls, which the heading walk of :func:`explore` rarely makes."""
    n = len(episodes)
    wall_x, door_y = tr.layout_tensors([e.layout for e in episodes])
    knots = rng.uniform(-bound, bound, size=(n, -(-steps // hold), 2))
    actions = np.repeat(knots, hold, axis=1)[:, :steps].astype(np.float32)
    positions = np.empty((n, steps + 1, 2))
    positions[:, 0] = [e.start for e in episodes]
    pos = torch.from_numpy(positions[:, 0].copy())
    for t in range(steps):
        pos = tr.move(pos, torch.from_numpy(actions[:, t]).double(), wall_x, door_y)
        positions[:, t + 1] = pos.numpy()
    return positions, actions


def _leaning_runs(episodes: list[tr.Episode], start: np.ndarray, steps: int, rng: np.random.Generator, hold: int,
                  bound: float, lean: float, inner: np.ndarray, into_y: np.ndarray,
                  into_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Held-action runs from ``start`` whose knots lean into the walls the dot touches, each with probability
    ``lean``: the inner wall where ``inner`` (its side taken from where the dot is at each knot), else an outer
    wall in x where ``into_x`` is +-1, and an outer wall in y where ``into_y`` is +-1 (0: that axis is free)."""
    n = len(episodes)
    wall_x, door_y = tr.layout_tensors([e.layout for e in episodes])
    positions = np.empty((n, steps + 1, 2))
    actions = np.empty((n, steps, 2), dtype=np.float32)
    positions[:, 0] = start
    pos = torch.from_numpy(start)
    for t in range(steps):
        if t % hold == 0:
            knot = rng.uniform(-bound, bound, size=(n, 2))
            lean_in = rng.random(n) < lean
            toward = np.stack([np.where(inner, np.sign(wall_x.numpy() - pos[:, 0].numpy()), into_x), into_y], axis=1)
            magnitude = np.abs(knot) * np.where(lean_in, 1.0, -1.0)[:, None]
            knot = np.where(toward != 0, toward * magnitude, knot)
        actions[:, t] = knot
        pos = tr.move(pos, torch.from_numpy(actions[:, t]).double(), wall_x, door_y)
        positions[:, t + 1] = pos.numpy()
    return positions, actions


def wall_contact_actions(episodes: list[tr.Episode], steps: int, rng: np.random.Generator, hold: int,
                         bound: float, lean: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Held-action runs (as :func:`held_actions`) that start touching the inner wall at a random height, each
    knot's x pointing into the wall with probability ``lean``.

    Touching a wall, any move with a component into it is stopped whole: the dot does not slide. Random
    walks rarely press against the wall, so a model trained on them imagines slides and leaks there, and a
    planner finds exactly those plans (README). These runs show the contact physics many times over."""
    n = len(episodes)
    wall_x = tr.layout_tensors([e.layout for e in episodes])[0].numpy()
    side = np.array([tr.room_of(e.start[0], e.layout) for e in episodes], dtype=np.float64)
    gap = rng.uniform(0.0, 1.0, n)
    start = np.stack([wall_x + side * (tr.WALL_HALF_WIDTH + gap), rng.uniform(tr.FREE_LO, tr.FREE_HI, n)], axis=1)
    free = np.zeros(n)
    return _leaning_runs(episodes, start, steps, rng, hold, bound, lean, np.ones(n, dtype=bool), free, free)


def outer_contact_actions(episodes: list[tr.Episode], steps: int, rng: np.random.Generator, hold: int,
                          bound: float, lean: float = 0.75, corner: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Held-action runs that start touching one of the four outer walls (drawn uniformly) and lean into it, as
    :func:`wall_contact_actions` does for the inner wall. A share ``corner`` of the runs on the top and bottom
    walls start in the corner that wall makes with the inner wall and lean into both.

    A planner whose goal is behind the inner wall drives the dot into those corners and along the outer walls
    (README); the inner-wall runs alone leave the model imagining slides there."""
    n = len(episodes)
    which = rng.integers(0, 4, n)  # 0 top, 1 bottom, 2 left, 3 right
    in_corner = (rng.random(n) < corner) & (which < 2)
    start = np.array([e.start for e in episodes], dtype=np.float64)
    wall_x = tr.layout_tensors([e.layout for e in episodes])[0].numpy()
    side = np.array([tr.room_of(e.start[0], e.layout) for e in episodes], dtype=np.float64)
    start[:, 1] = np.select([which == 0, which == 1], [tr.FREE_LO, tr.FREE_HI], start[:, 1])
    start[:, 0] = np.select([which == 2, which == 3, in_corner],
                            [tr.FREE_LO, tr.FREE_HI, wall_x + side * tr.WALL_HALF_WIDTH], start[:, 0])
    into_y = np.select([which == 0, which == 1], [-1.0, 1.0], 0.0)
    into_x = np.select([which == 2, which == 3], [-1.0, 1.0], 0.0)
    return _leaning_runs(episodes, start, steps, rng, hold, bound, lean, in_corner, into_y, into_x)


def exploration_batch(rng: np.random.Generator, num: int, steps: int,
                      cfg: ExplorationConfig = ExplorationConfig()) -> list[Trajectory]:
    """``num`` random layouts and starts, explored for ``steps`` actions, rendered to frames (state = positions)."""
    episodes = [tr.draw_episode(rng) for _ in range(num)]
    positions, actions = explore(episodes, steps, rng, rng.random(num) < cfg.door_fraction, cfg)
    leaning = cfg.contact_fraction + cfg.outer_contact_fraction
    kind = rng.random(num) if cfg.held_fraction > 0 or leaning > 0 else np.ones(num)
    lo = 0.0  # each kind of held run takes the next band of ``kind``, in this order
    for fraction, runs in ((cfg.held_fraction, held_actions), (cfg.contact_fraction, wall_contact_actions),
                           (cfg.outer_contact_fraction, outer_contact_actions)):
        picked = np.flatnonzero((kind >= lo) & (kind < lo + fraction))
        lo += fraction
        if len(picked):
            positions[picked], actions[picked] = runs([episodes[i] for i in picked], steps, rng, cfg.hold,
                                                      cfg.held_bound)
    out = []
    for e, p, a in zip(episodes, positions, actions):
        k = len(p)
        obs = tr.observe(torch.from_numpy(p), torch.full((k,), float(e.layout.wall_x)),
                         torch.full((k,), float(e.layout.door_y)))
        out.append(Trajectory((obs * 255).round().to(torch.uint8).numpy(), a, p.astype(np.float32)))
    return out


def write_exploration(out_dir: str | Path, *, num: int, steps: int, seed: int, cfg: ExplorationConfig = ExplorationConfig(),
                      shard_size: int = 256, overwrite: bool = False) -> dict:
    """``num`` exploration trajectories of ``steps`` actions into shards; returns the manifest."""
    with TrajectoryShardWriter(out_dir, max_samples=shard_size, overwrite=overwrite) as writer:
        for first in range(0, num, shard_size):
            batch = exploration_batch(np.random.default_rng([seed, first]), min(shard_size, num - first), steps, cfg)
            for i, traj in enumerate(batch, start=first):
                writer.write_trajectory(f"traj-{i:07d}", traj, {"env": "two_rooms"})
        return writer.close()
