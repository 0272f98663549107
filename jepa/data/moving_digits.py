"""Moving-objects clips: a small real object slides in a straight line on a black canvas.

The main label is the motion (4 directions x 2 speeds = 8 classes), which no single frame
shows: telling right from left or slow from fast needs at least two frames, so a probe on
these clips measures whether a video encoder captures time. The object (a Fashion-MNIST
image, or a drawn shape when that data set is missing) is a second, appearance-only label.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from jepa.data.fashion_mnist import DataNotFoundError, load_fashion_mnist
from jepa.data.shard_writer import ShardWriter
from jepa.data.video_encode import encode_mp4

DIRECTIONS = ("right", "left", "down", "up")
STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) per direction
SPEEDS = (0.5, 1.0)  # pixels per frame
SPEED_NAMES = ("slow", "fast")
MOTIONS = tuple(f"{d}-{s}" for d in DIRECTIONS for s in SPEED_NAMES)  # label = direction * 2 + speed
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
SHAPES = ("square", "disc", "triangle", "cross", "diamond", "ring")
SPLITS = {"train": (0, "train"), "val": (1, "test")}  # split -> (seed stream, Fashion-MNIST split)


@dataclass(frozen=True)
class ObjectBank:
    """Object images uint8 [N, s, s] with their class index [N] and class names."""

    images: np.ndarray
    classes: np.ndarray
    names: tuple[str, ...]
    source: str


def _area_resize(images: torch.Tensor, size: int) -> np.ndarray:
    chunks = [
        F.interpolate(chunk.float(), size=(size, size), mode="area").round().to(torch.uint8)[:, 0]
        for chunk in images.split(8192)
    ]
    return torch.cat(chunks).numpy()


def fashion_mnist_bank(split: str = "train", *, size: int = 12) -> ObjectBank:
    """Fashion-MNIST images of ``split`` ('train' or 'test') shrunk to size x size; raises DataNotFoundError."""
    images, labels = load_fashion_mnist(split)
    return ObjectBank(_area_resize(images, size), labels.numpy(), FASHION_MNIST_CLASSES, f"fashion-mnist-{split}")


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r2 = u**2 + v**2
    masks = {
        "square": (np.abs(u) < 0.8) & (np.abs(v) < 0.8),
        "disc": r2 < 0.85**2,
        "triangle": (np.abs(v) < 0.8) & (np.abs(u) < 0.55 * (v + 0.8)),
        "cross": ((np.abs(u) < 0.25) & (np.abs(v) < 0.9)) | ((np.abs(v) < 0.25) & (np.abs(u) < 0.9)),
        "diamond": np.abs(u) + np.abs(v) < 0.9,
        "ring": (r2 < 0.9**2) & (r2 > 0.5**2),
    }
    return masks[name]


def shape_bank(*, size: int = 12) -> ObjectBank:
    """Drawn shapes (anti-aliased by 4x supersampling), class = index in SHAPES."""
    fine = 4 * size
    axis = (np.arange(fine) + 0.5) / fine * 2 - 1
    v, u = np.meshgrid(axis, axis, indexing="ij")
    images = [
        (_shape_mask(name, u, v).reshape(size, 4, size, 4).mean(axis=(1, 3)) * 255).round().astype(np.uint8)
        for name in SHAPES
    ]
    return ObjectBank(np.stack(images), np.arange(len(SHAPES)), SHAPES, "shapes")


def object_bank(split: str = "train", *, size: int = 12) -> ObjectBank:
    """Fashion-MNIST objects for clip split ``split`` (val clips use its test images), else drawn shapes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    try:
        return fashion_mnist_bank(SPLITS[split][1], size=size)
    except DataNotFoundError as err:
        warnings.warn(f"moving digits use drawn shapes as objects: {err}", stacklevel=2)
        return shape_bank(size=size)


def _check_geometry(frames: int, size: int, object_size: int) -> None:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise ValueError(f"frames must be an integer >= 2 (motion needs two frames), got {frames!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2 or size % 2:
        raise ValueError(f"size must be an even integer (H.264 needs even sizes), got {size!r}")
    travel = max(SPEEDS) * (frames - 1)
    if size - object_size < travel:
        raise ValueError(
            f"a {object_size}px object moving {travel:g}px in {frames} frames does not fit a {size}px canvas; "
            f"use size >= {object_size + int(np.ceil(travel))} or fewer frames"
        )


def make_clip(
    rng: np.random.Generator, objects: ObjectBank, *, frames: int = 16, size: int = 32, noise: float = 2.0
) -> tuple[np.ndarray, dict]:
    """One clip (uint8 [frames, size, size]) and its labels: label (motion), direction, speed, object.

    The object's top-left corner is at round(p0 + v * t); p0 is drawn so the object stays
    fully inside the canvas for the whole clip. Its brightness is scaled per clip and
    Gaussian noise (std ``noise`` grey levels) is added to every pixel.
    """
    obj_size = objects.images.shape[1]
    _check_geometry(frames, size, obj_size)
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    direction, speed, index = int(rng.integers(4)), int(rng.integers(2)), int(rng.integers(len(objects.images)))
    image = objects.images[index].astype(np.float32) * rng.uniform(0.6, 1.0)
    span = size - obj_size
    travel = SPEEDS[speed] * (frames - 1)
    start = rng.uniform(0, span - travel)
    (dy, dx), t = STEPS[direction], np.arange(frames)
    along = start + SPEEDS[speed] * t if dy + dx > 0 else span - start - SPEEDS[speed] * t
    along = np.floor(along + 0.5).astype(int)
    across = np.full(frames, int(rng.integers(span + 1)))
    ys, xs = (along, across) if dy else (across, along)
    clip = np.zeros((frames, size, size), np.float32)
    for k in range(frames):
        clip[k, ys[k] : ys[k] + obj_size, xs[k] : xs[k] + obj_size] = image
    if noise:
        clip += rng.normal(0.0, noise, clip.shape).astype(np.float32)
    labels = {"label": direction * 2 + speed, "direction": direction, "speed": speed, "object": int(objects.classes[index])}
    return np.clip(clip + 0.5, 0, 255).astype(np.uint8), labels


def label_names(objects: ObjectBank) -> dict[str, list[str]]:
    """Class names of every label field, for the manifest (probes print names, not indices)."""
    return {"label": list(MOTIONS), "direction": list(DIRECTIONS), "speed": list(SPEED_NAMES), "object": list(objects.names)}


def write_split(
    out_dir: str | os.PathLike,
    *,
    split: str,
    num_videos: int,
    frames: int = 16,
    size: int = 32,
    fps: float = 8.0,
    seed: int = 0,
    object_size: int = 12,
    noise: float = 2.0,
    shard_samples: int = 1000,
    objects: ObjectBank | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write ``num_videos`` clips of ``split`` as shards in ``out_dir``; returns the manifest.

    Clip i depends only on (seed, split, i), so any clip can be regenerated on its own.
    """
    if isinstance(num_videos, bool) or not isinstance(num_videos, int) or num_videos < 1:
        raise ValueError(f"num_videos must be a positive integer, got {num_videos!r}")
    objects = objects if objects is not None else object_bank(split, size=object_size)
    _check_geometry(frames, size, objects.images.shape[1])
    stream = SPLITS[split][0]
    with ShardWriter(out_dir, prefix="clips", max_samples=shard_samples, max_bytes=None,
                     label_names=label_names(objects), overwrite=overwrite) as writer:
        for i in tqdm(range(num_videos), desc=f"moving digits {split}", unit="clip", disable=not progress):
            rng = np.random.default_rng([seed, stream, i])
            clip, labels = make_clip(rng, objects, frames=frames, size=size, noise=noise)
            meta = {
                "fps": float(fps), "num_frames": frames, "height": size, "width": size,
                "label": labels.pop("label"), "labels": labels,
                "source": f"moving-digits/{objects.source}/seed{seed}/{split}/{i}",
            }
            writer.write(f"{split}-{i:07d}", encode_mp4(clip, fps), meta)
    return writer.manifest


def generate(
    out_dir: str | os.PathLike,
    *,
    num_train: int = 2000,
    num_val: int = 500,
    frames: int = 16,
    size: int = 32,
    fps: float = 8.0,
    seed: int = 0,
    object_size: int = 12,
    noise: float = 2.0,
    shard_samples: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, dict]:
    """Write ``out_dir/train`` and ``out_dir/val`` (independent random streams); returns their manifests."""
    counts = {"train": num_train, "val": num_val}
    return {
        split: write_split(
            Path(out_dir) / split, split=split, num_videos=count, frames=frames, size=size, fps=fps, seed=seed,
            object_size=object_size, noise=noise, shard_samples=shard_samples, overwrite=overwrite, progress=progress,
        )
        for split, count in counts.items()
    }
