"""The video input pipeline for training and probing: shard locations, streams of clips, batches with masks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch

from jepa.config import Config
from jepa.data.moving_digits import generate
from jepa.data.sampling import derive_seed
from jepa.data.shards import MANIFEST, clip_stream, collate_clips
from jepa.data.video import ClipTransform, EvalClipTransform
from jepa.masks import MaskGenerator

MOVING_DIGITS = "moving-digits"
VIDEO_MEAN, VIDEO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_video_source(source: str) -> bool:
    """Moving digits, shard patterns and folders of shards are video; anything else is images."""
    if source == MOVING_DIGITS or ".tar" in source:
        return True
    path = Path(source)
    return any((path / sub / MANIFEST).is_file() for sub in ("", "train"))


def moving_digits_root(cfg: Config) -> Path:
    """Where the generated moving-digits shards live; generated here on first use."""
    root = Path(cfg.data.root or os.environ.get("JEPA_MOVING_DIGITS", Path.home() / ".cache" / "jepa" / MOVING_DIGITS))
    if not all((root / split / MANIFEST).is_file() for split in ("train", "val")):
        print(f"generating the moving-digits dataset in {root} (once) ...", flush=True)
        generate(root, overwrite=True)
    return root


def split_urls(cfg: Config, split: str) -> str:
    """Shards of 'train' or 'test' (``val/`` or ``test/``) for the configured source."""
    source = cfg.data.source
    root = moving_digits_root(cfg) if source == MOVING_DIGITS else Path(source)
    if ".tar" in source:
        if split != "train":
            raise FileNotFoundError(f"{source} is a shard pattern with no test split; give a folder with train/ and val/")
        return source
    names = ["train"] if split == "train" else ["val", "test"]
    for name in names:
        if (root / name / MANIFEST).is_file():
            return str(root / name)
    if split == "train" and (root / MANIFEST).is_file():
        return str(root)
    raise FileNotFoundError(f"{root} has no {' or '.join(n + '/' for n in names)} folder of shards with {MANIFEST}")


class VideoMaskCollator:
    """Stacks clips, sums skipped samples, and draws masks from a seed per (rank, worker, batch)."""

    def __init__(self, mask_generator: MaskGenerator, *, seed: int, rank: int) -> None:
        self.mask_generator = mask_generator
        self.seed = seed
        self.rank = rank
        self.batches = 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_clips(items)
        worker = torch.utils.data.get_worker_info()
        g = torch.Generator().manual_seed(
            derive_seed(self.seed, 4, self.rank, worker.id if worker else 0, self.batches)
        )
        self.batches += 1
        return {
            "inputs": batch["video"],
            "labels": batch["label"],
            "masks": self.mask_generator(len(batch["video"]), g),
            "skipped": torch.as_tensor(batch["skipped"]),
        }


def _spacing(cfg: Config) -> dict[str, Any]:
    """How clip frames are spaced: a target fps when configured, else every ``video.frame_step`` frames."""
    if cfg.video.target_fps is not None:
        return {"target_fps": cfg.video.target_fps}
    return {"frame_step": cfg.video.frame_step}


def video_train_loader(
    cfg: Config, mask_generator: MaskGenerator, *, micro_batch: int, rank: int, world_size: int
) -> torch.utils.data.DataLoader:
    """An endless (resampled) stream of augmented clips in batches with masks."""
    v = cfg.video
    transform = ClipTransform(size=cfg.data.img_size, mean=VIDEO_MEAN, std=VIDEO_STD, scale=cfg.data.crop_scale,
                              ratio=cfg.data.crop_ratio, hflip=cfg.data.hflip)
    stream = clip_stream(
        split_urls(cfg, "train"), clip_len=v.num_frames, **_spacing(cfg), transform=transform, short=v.short,
        shuffle_buffer=v.shuffle_buffer, resampled=True, seed=cfg.seed, rank=rank, world_size=world_size,
    )
    return torch.utils.data.DataLoader(
        stream, batch_size=micro_batch, collate_fn=VideoMaskCollator(mask_generator, seed=cfg.seed, rank=rank),
        num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0,
    )


class LabelledClips(torch.utils.data.IterableDataset):
    """One clip per video of a split (at a seeded position), as (clip [C, T, H, W], label), at most ``limit``."""

    def __init__(self, cfg: Config, split: str, limit: int | None = None) -> None:
        v = cfg.video
        self.stream = clip_stream(
            split_urls(cfg, split), clip_len=v.num_frames, **_spacing(cfg), short=v.short,
            transform=EvalClipTransform(size=cfg.data.img_size, mean=VIDEO_MEAN, std=VIDEO_STD),
            rank=0, world_size=1,
        )
        self.limit = limit

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for item in islice(self.stream, self.limit):
            if item["label"] < 0:
                raise ValueError(f"clip {item['key']} has no label; probes need labelled data")
            yield item["video"], item["label"]
