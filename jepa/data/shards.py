"""Video clips streamed from webdataset shards: split over ranks and workers, seeded, bad samples counted, never fatal.

A sample is ``{key}.mp4`` (H.264) + ``{key}.json`` (``fps``, ``num_frames``, ``label``, ...). Every
random choice (shard order, shuffle buffer, resampled shards, clip start, augmentation) is seeded
from ``seed``, the epoch (:meth:`ClipStream.set_epoch`), and the reader (rank, worker), so a run
with the same ranks and workers reads the same clips on any machine.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from jepa.data.sampling import derive_seed
from jepa.data.video import ShortPolicy, VideoError, frame_step_for_fps, read_clip

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# A reader that drops this many samples or shards in a row, with no good clip between them, stops with an
# error: the data or the decoder is broken, and a resampled stream would otherwise spin forever.
MAX_BAD_IN_A_ROW = 1000


class BadSample(ValueError):
    """A sample without the members or metadata a clip needs."""


@dataclass(frozen=True)
class ClipMeta:
    """What the stream needs from a sample's ``.json``."""

    num_frames: int
    fps: float
    label: int


def parse_meta(raw: bytes) -> ClipMeta:
    """Reads a sample's json; a null label becomes -1."""
    try:
        meta = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadSample(f"unreadable json: {error}") from error
    if not isinstance(meta, dict):
        raise BadSample(f"json must be an object, not {type(meta).__name__}")
    num_frames, fps, label = meta.get("num_frames"), meta.get("fps"), meta.get("label")
    if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
        raise BadSample(f"num_frames must be a positive int, not {num_frames!r}")
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not (math.isfinite(fps) and fps > 0):
        raise BadSample(f"fps must be a positive number, not {fps!r}")
    if label is not None and (not isinstance(label, int) or isinstance(label, bool)):
        raise BadSample(f"label must be an int or null, not {label!r}")
    return ClipMeta(num_frames=num_frames, fps=float(fps), label=-1 if label is None else label)


def shard_urls(urls: str | Path | Sequence[str | Path]) -> list[str]:
    """Shard paths from a brace pattern (``shard-{000000..000009}.tar``), a list, or a folder with ``manifest.json``."""
    if isinstance(urls, (str, Path)) and Path(urls).is_dir():
        manifest = Path(urls) / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{urls} is a folder without {MANIFEST}; pass the shards as a pattern or a list")
        shards = json.loads(manifest.read_text())["shards"]
        expanded = [str(Path(urls) / shard["name"]) for shard in shards]
    elif isinstance(urls, (str, Path)):
        expanded = wds.shardlists.expand_urls(str(urls))
    else:
        expanded = [str(url) for url in urls]
    if not expanded:
        raise ValueError(f"no shards in {urls!r}")
    return expanded


class BadSampleLog:
    """This reader's dropped samples and shards: counted for the consumer, warned for the first few, then every Nth."""

    def __init__(self, *, reader: str, first: int = 5, every: int = 100) -> None:
        self.reader = reader
        self.first = first
        self.every = every
        self.total = 0
        self.pending = 0

    def record(self, what: str, error: BaseException) -> None:
        self.total += 1
        self.pending += 1
        if self.total <= self.first or self.total % self.every == 0:
            logger.warning("%s: dropped bad %s (%d so far): %r", self.reader, what, self.total, error)
        if self.pending >= MAX_BAD_IN_A_ROW:
            raise RuntimeError(f"{self.reader}: {self.pending} bad samples or shards in a row, last {what}: {error!r}")

    def handler(self, error: Exception) -> bool:
        """webdataset's exception handler: record, then continue with the next member or shard."""
        self.record("shard or tar member", error)
        return True

    def take(self) -> int:
        """Bad samples since the last call, for the next yielded item."""
        count, self.pending = self.pending, 0
        return count


def check_split(num_shards: int, *, world_size: int, num_workers: int) -> None:
    """Refuses a split that would leave a reader without shards (an empty worker makes the epoch silently uneven)."""
    readers = world_size * num_workers
    if num_shards < readers:
        raise ValueError(
            f"{num_shards} shards cannot be split over {world_size} ranks x {num_workers} workers = {readers} "
            f"readers; use resampled=True or make at least {readers} shards"
        )


class ClipStream(torch.utils.data.IterableDataset):
    """Clips from shards, as ``{"video": [C, T, H, W], "label", "key", "skipped"}``; build it with :func:`clip_stream`.

    ``skipped`` counts the bad samples this reader dropped since its previous item (the last item also
    carries those after it), so the sum over a run's items is the number of bad samples and shards.
    Call :meth:`set_epoch` before each epoch, as with ``DistributedSampler``, for a new order.
    """

    def __init__(
        self, urls: list[str], *, clip_len: int, frame_step: int | None, target_fps: float | None,
        transform: Callable[[torch.Tensor], torch.Tensor], short: ShortPolicy, shuffle_buffer: int, resampled: bool,
        epoch_samples: int | None, seed: int, rank: int, world_size: int,
    ) -> None:
        super().__init__()
        self.urls = urls
        self.clip_len = clip_len
        self.frame_step = frame_step
        self.target_fps = target_fps
        self.transform = transform
        self.short = short
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.epoch_samples = epoch_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if not self.resampled:
            check_split(len(self.urls), world_size=self.world_size, num_workers=num_workers)
            if len(self.urls) % (self.world_size * num_workers) and self.rank == 0 and worker == 0:
                logger.warning(
                    "%d shards over %d ranks x %d workers: some readers get one shard more, so ranks see uneven "
                    "epochs", len(self.urls), self.world_size, num_workers,
                )
        log = BadSampleLog(reader=f"rank {self.rank} worker {worker}")
        pipeline = wds.DataPipeline(
            *self._shards(worker, num_workers),
            wds.tarfile_to_samples(handler=log.handler),
            *self._shuffle(worker),
            lambda samples: self._clips(samples, worker=worker, log=log),
            lambda items: carry_trailing_skips(items, log=log),
        )
        if self.epoch_samples is None:
            return iter(pipeline)
        low, extra = divmod(self.epoch_samples, num_workers)  # with_epoch counts per worker
        share = low + (worker < extra)
        return iter(pipeline.with_epoch(share)) if share else iter(())  # with_epoch(0) would mean "forever"

    def _shards(self, worker: int, num_workers: int) -> list[Any]:
        if self.resampled:
            rng = random.Random(derive_seed(self.seed, 1, self.epoch, self.rank, worker))
            return [lambda: resampled_shards(self.urls, rng=rng)]
        order = derive_seed(self.seed, 2, self.epoch) if self.shuffle_buffer else None  # same on every reader
        return [
            wds.SimpleShardList(self.urls, seed=order),
            lambda src: islice(src, self.rank, None, self.world_size),
            lambda src: islice(src, worker, None, num_workers),
        ]

    def _shuffle(self, worker: int) -> list[Any]:
        if not self.shuffle_buffer:
            return []
        return [wds.shuffle(self.shuffle_buffer, seed=derive_seed(self.seed, 3, self.epoch, self.rank, worker))]

    def _clips(self, samples: Iterable[dict[str, Any]], *, worker: int, log: BadSampleLog) -> Iterator[dict[str, Any]]:
        for index, sample in enumerate(samples):
            key = sample.get("__key__", "?")
            item_seed = derive_seed(self.seed, 4, self.epoch, self.rank, worker, index)
            try:
                video, label = self._clip(sample, item_seed)
            except (BadSample, VideoError) as error:
                log.record(f"sample {key} of {sample.get('__url__', '?')}", error)
                continue
            yield {"video": video, "label": label, "key": key, "skipped": log.take()}

    def _clip(self, sample: dict[str, Any], item_seed: int) -> tuple[torch.Tensor, int]:
        missing = {"mp4", "json"} - sample.keys()
        if missing:
            raise BadSample(f"missing member(s) {sorted(missing)}; has {sorted(k for k in sample if k[:2] != '__')}")
        meta = parse_meta(sample["json"])
        step = self.frame_step or frame_step_for_fps(meta.fps, self.target_fps)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed)
            frames = read_clip(
                sample["mp4"], num_frames=meta.num_frames, clip_len=self.clip_len, frame_step=step, short=self.short,
                generator=np.random.default_rng(item_seed),
            )
            return self.transform(frames), meta.label


def resampled_shards(urls: list[str], *, rng: random.Random) -> Iterator[dict[str, str]]:
    """Shards drawn with replacement forever (webdataset's own resampler cannot be seeded reproducibly)."""
    while True:
        yield {"url": rng.choice(urls)}


def carry_trailing_skips(items: Iterable[dict[str, Any]], *, log: BadSampleLog) -> Iterator[dict[str, Any]]:
    """Holds one item back so bad samples after a reader's last good one still reach the consumer."""
    held = None
    for item in items:
        if held is not None:
            yield held
        held = item
    if held is not None:
        held["skipped"] += log.take()
        yield held
    elif log.pending:
        logger.warning("%s: no good clip at all; its %d bad samples or shards are not in any item", log.reader,
                       log.take())


def clip_stream(
    urls: str | Path | Sequence[str | Path], *, clip_len: int, transform: Callable[[torch.Tensor], torch.Tensor],
    frame_step: int | None = None, target_fps: float | None = None, short: ShortPolicy = "pad",
    shuffle_buffer: int = 0, resampled: bool = False, epoch_samples: int | None = None, seed: int = 0,
    rank: int | None = None, world_size: int | None = None,
) -> ClipStream:
    """A stream of clips of ``clip_len`` frames, every ``frame_step`` frames or resampled to about ``target_fps``.

    ``shuffle_buffer=0`` keeps shard and sample order (evaluation); otherwise shards are shuffled each
    epoch and samples go through a buffer of that size. Without ``resampled`` each shard is read once
    per epoch by exactly one reader (rank x DataLoader worker); with it, each reader draws shards with
    replacement forever, or for ``epoch_samples`` clips per rank. ``rank``/``world_size`` default to
    torch.distributed's when it is initialised, else a single process.
    """
    shards = shard_urls(urls)
    if (frame_step is None) == (target_fps is None):
        raise ValueError("give exactly one of frame_step and target_fps")
    if frame_step is not None and (not isinstance(frame_step, int) or frame_step < 1):
        raise ValueError(f"frame_step must be a positive int, not {frame_step!r}")
    if target_fps is not None and not target_fps > 0:
        raise ValueError(f"target_fps must be positive, not {target_fps!r}")
    if not isinstance(clip_len, int) or clip_len < 1:
        raise ValueError(f"clip_len must be a positive int, not {clip_len!r}")
    if short not in ("pad", "skip"):
        raise ValueError(f"short must be 'pad' or 'skip', not {short!r}")
    if shuffle_buffer < 0:
        raise ValueError(f"shuffle_buffer must be >= 0, not {shuffle_buffer}")
    if epoch_samples is not None and (not resampled or epoch_samples < 1):
        raise ValueError("epoch_samples needs resampled=True and must be positive (a plain epoch reads every shard once)")
    rank, world_size = resolve_rank(rank, world_size)
    return ClipStream(
        shards, clip_len=clip_len, frame_step=frame_step, target_fps=target_fps, transform=transform, short=short,
        shuffle_buffer=shuffle_buffer, resampled=resampled, epoch_samples=epoch_samples, seed=seed, rank=rank,
        world_size=world_size,
    )


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit (rank, world_size), else torch.distributed's when initialised, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    return rank, world_size


def collate_clips(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A batch: video ``[B, C, T, H, W]``, labels ``[B]``, keys, and the bad samples the items carried."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    return {
        "video": torch.stack([item["video"] for item in items]),
        "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "key": [item["key"] for item in items],
        "skipped": torch.tensor(sum(item["skipped"] for item in items)),
    }
