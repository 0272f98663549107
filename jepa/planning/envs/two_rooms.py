"""The two-rooms navigation task (eb_jepa / DINO-WM lineage): a dot, a wall with a door, a goal in the other room.

Geometry, in pixel coordinates (x = column, y = row, pixel centres at integers, image 65 x 65):
outer walls are the pixels at and outside 4 and 60, so the dot's centre lives in the closed box
[4.5, 59.5]^2; the inner wall is the 3-pixel column band ``wall_x - 1 .. wall_x + 1`` (the open
strip x in (wall_x - 1.5, wall_x + 1.5)), open only at the door, the 9 rows ``door_y - 4 ..
door_y + 4`` (y in [door_y - 4.5, door_y + 4.5]). An action is a 2-D displacement whose norm is
clipped to ``max_norm``; a move that would enter a wall stops where it touches the wall.

The physics is one batched torch function (:func:`move`), so the environment, the data
generator and the oracle world model of the planners all run exactly the same dynamics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

SIZE = 65
SIGMA = 1.3
OUTER_LO, OUTER_HI = 4, 60  # outer wall pixels
FREE_LO, FREE_HI = OUTER_LO + 0.5, OUTER_HI - 0.5  # where the dot's centre may be
WALL_HALF_WIDTH = 1.5  # the inner wall is 3 px wide
DOOR_HALF_HEIGHT = 4
WALL_X_RANGE = (20, 44)
DOOR_Y_RANGE = (10, 54)
MAX_NORM = 2.45
MAX_STEPS = 200
SUCCESS_RADIUS = 4.5
SPAWN_MARGIN = 2.0  # starts and goals keep this far from every wall
_EPS = 1e-9


class EpisodeError(ValueError):
    """An episode or action the environment cannot use."""


@dataclass(frozen=True)
class Layout:
    """Where the inner wall and its door are (integer pixels)."""

    wall_x: int
    door_y: int

    def __post_init__(self) -> None:
        for name, value, (lo, hi) in (("wall_x", self.wall_x, WALL_X_RANGE), ("door_y", self.door_y, DOOR_Y_RANGE)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                raise EpisodeError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


@dataclass(frozen=True)
class Episode:
    """A pinned episode: layout, start and goal positions (x, y) in pixels."""

    layout: Layout
    start: tuple[float, float]
    goal: tuple[float, float]

    def __post_init__(self) -> None:
        for name, point in (("start", self.start), ("goal", self.goal)):
            if len(point) != 2 or not all(math.isfinite(float(v)) for v in point):
                raise EpisodeError(f"{name} must be two finite numbers (x, y), got {point!r}")
            if not is_free(point, self.layout):
                raise EpisodeError(
                    f"{name} {tuple(point)} is inside a wall (free space: x, y in [{FREE_LO}, {FREE_HI}] outside the "
                    f"inner wall x in ({self.layout.wall_x - WALL_HALF_WIDTH}, {self.layout.wall_x + WALL_HALF_WIDTH}) "
                    f"except the door y in [{self.layout.door_y - DOOR_HALF_HEIGHT - 0.5}, "
                    f"{self.layout.door_y + DOOR_HALF_HEIGHT + 0.5}])"
                )

    def to_json(self) -> dict:
        return {"wall_x": int(self.layout.wall_x), "door_y": int(self.layout.door_y),
                "start": [round(float(v), 3) for v in self.start], "goal": [round(float(v), 3) for v in self.goal]}

    @staticmethod
    def from_json(item: dict) -> Episode:
        if not isinstance(item, dict) or set(item) != {"wall_x", "door_y", "start", "goal"}:
            raise EpisodeError(f"an episode is an object with exactly wall_x, door_y, start, goal; got {item!r}")
        return Episode(Layout(item["wall_x"], item["door_y"]), tuple(item["start"]), tuple(item["goal"]))


def layout_tensors(layouts: Sequence[Layout]) -> tuple[torch.Tensor, torch.Tensor]:
    """(wall_x, door_y) [B] float64 of a batch of layouts, as :func:`move` and :func:`observe` take them."""
    return (torch.tensor([float(lay.wall_x) for lay in layouts], dtype=torch.float64),
            torch.tensor([float(lay.door_y) for lay in layouts], dtype=torch.float64))


def room_of(x: float, layout: Layout) -> int:
    """-1 left room, +1 right room, 0 inside the wall's band (the door corridor)."""
    if x <= layout.wall_x - WALL_HALF_WIDTH:
        return -1
    if x >= layout.wall_x + WALL_HALF_WIDTH:
        return 1
    return 0


def is_free(point: Sequence[float], layout: Layout) -> bool:
    """Whether a dot centre at ``point`` is outside every wall."""
    x, y = float(point[0]), float(point[1])
    if not (FREE_LO <= x <= FREE_HI and FREE_LO <= y <= FREE_HI):
        return False
    in_band = abs(x - layout.wall_x) < WALL_HALF_WIDTH
    in_door = abs(y - layout.door_y) <= DOOR_HALF_HEIGHT + 0.5
    return not in_band or in_door


def clip_norm(action: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each 2-D action down to at most ``max_norm`` (direction kept)."""
    norm = action.norm(dim=-1, keepdim=True)
    return action * torch.clamp(max_norm / norm.clamp_min(1e-12), max=1.0)


def _slab(p: torch.Tensor, d: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float):
    """Entry and exit times of the line p + t d through the open interval (lo, hi) on one axis."""
    moving = d != 0
    safe = torch.where(moving, d, torch.ones_like(d))
    t1, t2 = (lo - p) / safe, (hi - p) / safe
    inside = (p > lo) & (p < hi)
    inf = torch.full_like(p, math.inf)
    near = torch.where(moving, torch.minimum(t1, t2), torch.where(inside, -inf, inf))
    far = torch.where(moving, torch.maximum(t1, t2), torch.where(inside, inf, -inf))
    return near, far


def move(pos: torch.Tensor, action: torch.Tensor, wall_x: torch.Tensor, door_y: torch.Tensor,
         max_norm: float = MAX_NORM) -> torch.Tensor:
    """One step of the dynamics for a batch: pos, action [..., 2]; wall_x, door_y broadcast to pos[..., 0].

    The displacement is clipped to ``max_norm``, then cut at the first wall it would enter.
    """
    d = clip_norm(action.to(pos.dtype), max_norm)
    px, py, dx, dy = pos[..., 0], pos[..., 1], d[..., 0], d[..., 1]
    wall_x = torch.as_tensor(wall_x, dtype=pos.dtype).expand_as(px)
    door_y = torch.as_tensor(door_y, dtype=pos.dtype).expand_as(px)
    t = torch.ones_like(px)
    for p, v in ((px, dx), (py, dy)):  # leaving the outer box
        exit_t = torch.where(v > 0, (FREE_HI - p) / v.clamp_min(1e-300), torch.where(v < 0, (FREE_LO - p) / v.clamp_max(-1e-300), t))
        t = torch.minimum(t, exit_t.clamp_min(0.0))
    x_near, x_far = _slab(px, dx, wall_x - WALL_HALF_WIDTH, wall_x + WALL_HALF_WIDTH)
    door_lo, door_hi = door_y - DOOR_HALF_HEIGHT - 0.5, door_y + DOOR_HALF_HEIGHT + 0.5
    for y_lo, y_hi in ((-math.inf, door_lo), (door_hi, math.inf)):  # the wall above and below the door
        y_near, y_far = _slab(py, dy, y_lo, y_hi)
        enter, leave = torch.maximum(x_near, y_near), torch.minimum(x_far, y_far)
        hit = (enter < leave) & (enter >= -_EPS) & (enter < t)
        t = torch.where(hit, enter.clamp_min(0.0), t)
    t = (t - _EPS).clamp_min(0.0)
    return (pos + d * t.unsqueeze(-1)).clamp(FREE_LO, FREE_HI)


def wall_mask(wall_x: torch.Tensor, door_y: torch.Tensor) -> torch.Tensor:
    """Wall channel [B, 65, 65] (1 = wall) for layouts wall_x, door_y [B]."""
    idx = torch.arange(SIZE)
    rows, cols = idx.view(1, SIZE, 1), idx.view(1, 1, SIZE)
    wx, dy = wall_x.view(-1, 1, 1), door_y.view(-1, 1, 1)
    outer = (rows <= OUTER_LO) | (rows >= OUTER_HI) | (cols <= OUTER_LO) | (cols >= OUTER_HI)
    inner = ((cols - wx).abs() <= 1) & ((rows - dy).abs() > DOOR_HALF_HEIGHT)
    return (outer | inner).float()


def dot_image(pos: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Gaussian dot channel [B, 65, 65] for positions [B, 2] (peak 1 at the centre)."""
    idx = torch.arange(SIZE, dtype=torch.float32)
    pos = pos.float()
    gx = torch.exp(-((idx.view(1, -1) - pos[:, :1]) ** 2) / (2 * sigma**2))  # [B, W]
    gy = torch.exp(-((idx.view(1, -1) - pos[:, 1:]) ** 2) / (2 * sigma**2))  # [B, H]
    return gy.unsqueeze(2) * gx.unsqueeze(1)


def observe(pos: torch.Tensor, wall_x: torch.Tensor, door_y: torch.Tensor) -> torch.Tensor:
    """Observations [B, 2, 65, 65] (dot, wall) for positions [B, 2] and layouts [B]."""
    return torch.stack([dot_image(pos), wall_mask(wall_x, door_y)], dim=1)


def render_rgb(obs: torch.Tensor, goal: torch.Tensor | None = None, scale: int = 4) -> np.ndarray:
    """An observation [2, 65, 65] as an RGB uint8 image [65 s, 65 s, 3]: walls grey, dot red, goal (a position) green."""
    dot, wall = obs[0].float().clamp(0, 1), obs[1].float()
    rgb = torch.stack([dot, torch.zeros_like(dot), torch.zeros_like(dot)], dim=-1)
    if goal is not None:
        g = dot_image(goal.view(1, 2), sigma=2.0)[0] * 0.8
        rgb[..., 1] = torch.maximum(rgb[..., 1], g)
    rgb = torch.where(wall.unsqueeze(-1) > 0, torch.full_like(rgb, 0.55), rgb)
    image = (rgb * 255).round().to(torch.uint8).numpy()
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 10.0) -> Path:
    """Write RGB uint8 frames as a looping GIF."""
    from PIL import Image

    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.asarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def draw_episode(rng: np.random.Generator) -> Episode:
    """A random layout with start and goal in opposite rooms, each at least SPAWN_MARGIN from any wall."""
    layout = Layout(int(rng.integers(WALL_X_RANGE[0], WALL_X_RANGE[1] + 1)),
                    int(rng.integers(DOOR_Y_RANGE[0], DOOR_Y_RANGE[1] + 1)))
    rooms = {
        -1: (FREE_LO + SPAWN_MARGIN, layout.wall_x - WALL_HALF_WIDTH - SPAWN_MARGIN),
        1: (layout.wall_x + WALL_HALF_WIDTH + SPAWN_MARGIN, FREE_HI - SPAWN_MARGIN),
    }
    side = 1 if rng.random() < 0.5 else -1
    points = []
    for room in (side, -side):
        lo, hi = rooms[room]
        points.append((float(rng.uniform(lo, hi)), float(rng.uniform(FREE_LO + SPAWN_MARGIN, FREE_HI - SPAWN_MARGIN))))
    return Episode(layout, points[0], points[1])


def episodes_from_seed(seed: int, n: int) -> list[Episode]:
    """The episodes ``reset(seed=seed + i)`` draws, i < n."""
    return [draw_episode(np.random.default_rng(seed + i)) for i in range(n)]


def load_episodes(path: str | Path | None = None) -> list[Episode]:
    """Episodes from a JSON list of {wall_x, door_y, start, goal}; None: the 20 pinned evaluation episodes."""
    if path is None:
        text = resources.files("jepa.planning").joinpath("episodes/two_rooms_20.json").read_text()
        where = "the pinned two_rooms_20.json"
    else:
        text, where = Path(path).read_text(), str(path)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise EpisodeError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(items, list) or not items:
        raise EpisodeError(f"{where} must hold a non-empty JSON list of episodes")
    episodes = []
    for i, item in enumerate(items):
        try:
            episodes.append(Episode.from_json(item))
        except EpisodeError as err:
            raise EpisodeError(f"{where}, episode {i}: {err}") from err
    return episodes


def save_episodes(episodes: Sequence[Episode], path: str | Path) -> None:
    """Write episodes as a JSON list, one episode per line."""
    lines = ",\n".join(" " + json.dumps(e.to_json()) for e in episodes)
    Path(path).write_text("[\n" + lines + "\n]\n")


class TwoRoomsEnv:
    """One episode at a time: ``reset`` then ``step(action)`` until ``done``; observations are [2, 65, 65] float."""

    def __init__(self, *, max_norm: float = MAX_NORM, max_steps: int = MAX_STEPS,
                 success_radius: float = SUCCESS_RADIUS) -> None:
        if max_norm <= 0 or max_steps < 1 or success_radius <= 0:
            raise ValueError("max_norm and success_radius must be > 0 and max_steps >= 1")
        self.max_norm = max_norm
        self.max_steps = max_steps
        self.success_radius = success_radius
        self.episode: Episode | None = None
        self.position = torch.zeros(2, dtype=torch.float64)
        self.steps = 0

    def reset(self, seed: int | None = None, *, layout: Layout | None = None,
              start: Sequence[float] | None = None, goal: Sequence[float] | None = None) -> torch.Tensor:
        """``reset(seed)`` draws an episode; ``reset(layout=..., start=..., goal=...)`` pins one exactly."""
        pinned = (layout, start, goal)
        if any(v is not None for v in pinned):
            if seed is not None or any(v is None for v in pinned):
                raise EpisodeError("pin an episode with all of layout, start and goal (and no seed), or pass only a seed")
            episode = Episode(layout, tuple(float(v) for v in start), tuple(float(v) for v in goal))
        else:
            episode = draw_episode(np.random.default_rng(seed))
        return self.reset_to(episode)

    def reset_to(self, episode: Episode) -> torch.Tensor:
        self.episode = episode
        self.position = torch.tensor(episode.start, dtype=torch.float64)
        self.steps = 0
        return self.observation()

    def _require_episode(self) -> Episode:
        if self.episode is None:
            raise RuntimeError("call reset() before using the environment")
        return self.episode

    @property
    def layout_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        e = self._require_episode()
        return torch.tensor([float(e.layout.wall_x)]), torch.tensor([float(e.layout.door_y)])

    @property
    def goal(self) -> torch.Tensor:
        return torch.tensor(self._require_episode().goal, dtype=torch.float64)

    def observation(self) -> torch.Tensor:
        return observe(self.position.view(1, 2), *self.layout_tensors)[0]

    def goal_observation(self) -> torch.Tensor:
        """What the environment looks like with the dot at the goal (the goal image a planner is given)."""
        return observe(self.goal.view(1, 2), *self.layout_tensors)[0]

    def step(self, action: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Move by ``action`` (2 finite numbers; the norm is clipped to ``max_norm``) and return the observation."""
        self._require_episode()
        if self.done:
            raise RuntimeError(f"the episode is over ({self.max_steps} steps); call reset()")
        action = torch.as_tensor(action, dtype=torch.float64)
        if action.shape != (2,):
            raise EpisodeError(f"an action is a 2-D displacement of shape (2,), got shape {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise EpisodeError(f"action {action.tolist()} is not finite")
        wall_x, door_y = self.layout_tensors
        self.position = move(self.position.view(1, 2), action.view(1, 2), wall_x.double(), door_y.double(),
                             self.max_norm)[0]
        self.steps += 1
        return self.observation()

    @property
    def done(self) -> bool:
        return self.steps >= self.max_steps

    @property
    def distance_to_goal(self) -> float:
        return float((self.position - self.goal).norm())

    @property
    def success(self) -> bool:
        return self.distance_to_goal <= self.success_radius

    def render(self, scale: int = 4) -> np.ndarray:
        """The current frame as RGB uint8 with the goal marked."""
        return render_rgb(self.observation(), self.goal, scale)


def door_policy(position: torch.Tensor, goal: torch.Tensor, layout: Layout, max_norm: float = MAX_NORM) -> torch.Tensor:
    """Scripted policy: walk to the door on this side, through it, then straight to the goal."""
    x = float(position[0])
    goal_room = room_of(float(goal[0]), layout)
    offset = WALL_HALF_WIDTH + 2.0
    exit_point = torch.tensor([layout.wall_x + goal_room * offset, layout.door_y], dtype=torch.float64)
    entry = torch.tensor([layout.wall_x - goal_room * offset, layout.door_y], dtype=torch.float64)
    in_corridor = abs(float(position[1]) - layout.door_y) < 0.5 and abs(x - layout.wall_x) <= offset + 0.5
    here = room_of(x, layout)
    if here == goal_room:
        target = goal.double()
    elif here == 0 or in_corridor:  # on the line from the entry to the exit: steps shorter than the corridor keep going
        target = exit_point
    else:
        target = entry
    return clip_norm(target - position.double(), max_norm)
