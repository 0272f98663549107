"""Clip loading throughput: webdataset shards against the same videos read as individual files.

Both loaders run the same work per clip (``jepa.data.video.read_clip``: random start, decode, then
``ClipTransform``) through a torch DataLoader with ``--workers`` workers: the shards with
``clip_stream(resampled=True)`` (decoding from the bytes in the tar), the files with a map-style
dataset that decodes each path. Each round times ``--clips`` clips from the first one delivered (so
worker start-up is not timed); the figures are medians over rounds, shards and files alternating.

    python -m benchmarks.video_loader                      # generates 16 videos of 64 frames at 256x256
    python -m benchmarks.video_loader --shards DIR --videos DIR --frames 16 --size 224 --workers 2
    python -m benchmarks.video_loader --smoke              # tiny configuration for CI (seconds)

Given only ``--shards`` (a folder with manifest.json, or a brace pattern) the videos are unpacked
into a temporary folder; given only ``--videos`` (a folder of .mp4) they are packed into shards.
Prints ONE JSON line on stdout (progress goes to stderr). ``*_clips_per_s`` is the total over the
workers, ``*_per_worker`` that divided by the workers, ``ratio`` = shards / files.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.report import device_name
from jepa.data.sampling import derive_seed
from jepa.data.shard_writer import ShardWriter
from jepa.data.shards import clip_stream, parse_meta, shard_urls
from jepa.data.video import ClipTransform, available_backend, count_frames, read_clip
from jepa.data.video_encode import encode_mp4, probe_video

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SMOKE = dict(frames=4, size=32, frame_step=2, clips=8, rounds=1, gen_videos=4, gen_frames=12, gen_size=64)
PER_SHARD, FPS, CRF = 4, 25.0, 23  # CRF 23: libx264's default


@dataclass(frozen=True)
class VideoFile:
    path: Path
    num_frames: int


def synthetic_frames(num_frames: int, size: int, seed: int) -> np.ndarray:
    """Blocky noise panning 3 px per frame under a moving bright bar: real motion that H.264 can compress."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 200, (size // 16 + 1, size // 16 + 1, 3), dtype=np.uint8)
    texture = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))[:size, :size]
    frames = np.stack([np.roll(texture, 3 * t, axis=1) for t in range(num_frames)])
    for t in range(num_frames):
        row = (5 * t) % (size - 8)
        frames[t, row:row + 8] = 255
    return frames


def sample_meta(*, num_frames: int, fps: float, height: int, width: int, source: str) -> dict[str, Any]:
    """The shard json of an unlabelled video."""
    return {"fps": fps, "num_frames": num_frames, "height": height, "width": width, "label": None, "labels": {},
            "source": source}


def shard_writer(folder: Path) -> ShardWriter:
    """Shards ``shard-NNNNNN.tar`` of PER_SHARD samples each, plus ``manifest.json``."""
    return ShardWriter(folder, prefix="shard", max_samples=PER_SHARD, max_bytes=None)


def generate(folder: Path, *, videos: int, frames: int, size: int) -> tuple[Path, list[VideoFile]]:
    """Synthetic videos written both as files and as shards."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    files = []
    with shard_writer(folder / "shards") as writer:
        for i in range(videos):
            mp4 = encode_mp4(synthetic_frames(frames, size, seed=i), FPS, crf=CRF)
            path = folder / "videos" / f"video{i:04d}.mp4"
            path.write_bytes(mp4)
            files.append(VideoFile(path, frames))
            writer.write(path.stem, mp4, sample_meta(num_frames=frames, fps=FPS, height=size, width=size,
                                                     source=path.name))
    return folder / "shards", files


def unpack_shards(urls: list[str], folder: Path) -> list[VideoFile]:
    """The shards' videos as individual files (frame counts from their json)."""
    files: dict[str, dict[str, bytes]] = {}
    for url in urls:
        with tarfile.open(url) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                files.setdefault(f"{Path(url).stem}_{key}", {})[ext] = tar.extractfile(member).read()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for key, members in sorted(files.items()):
        path = folder / f"{key}.mp4"
        path.write_bytes(members["mp4"])
        out.append(VideoFile(path, parse_meta(members["json"]).num_frames))
    return out


def video_files(folder: Path) -> list[VideoFile]:
    files = [VideoFile(path, count_frames(path)) for path in sorted(folder.glob("*.mp4"))]
    if not files:
        raise FileNotFoundError(f"no .mp4 files in {folder}")
    return files


def pack_videos(folder: Path, out: Path) -> tuple[Path, list[VideoFile]]:
    """A folder of .mp4 files as shards: frame counts from the decoder, rate and size from the container."""
    files = video_files(folder)
    with shard_writer(out) as writer:
        for video in files:
            info = probe_video(video.path)
            writer.write(re.sub(r"[^A-Za-z0-9_-]", "_", video.path.stem), video.path.read_bytes(),
                         sample_meta(num_frames=video.num_frames, fps=info["fps"], height=info["height"],
                                     width=info["width"], source=video.path.name))
    return out, files


class FileClips(torch.utils.data.Dataset):
    """The baseline over individual files: draw ``k`` picks a file and a clip start from (seed, k), like the
    stream's resampling, then runs the same ``read_clip`` + transform."""

    def __init__(self, files: list[VideoFile], *, clip_len: int, frame_step: int, transform: ClipTransform,
                 seed: int) -> None:
        self.files = files
        self.clip_len = clip_len
        self.frame_step = frame_step
        self.transform = transform
        self.seed = seed

    def __getitem__(self, draw: int) -> dict[str, Any]:
        rng = np.random.default_rng(derive_seed(self.seed, draw))
        video = self.files[rng.integers(len(self.files))]
        frames = read_clip(video.path, num_frames=video.num_frames, clip_len=self.clip_len,
                           frame_step=self.frame_step, short="pad", generator=rng)
        return {"video": self.transform(frames), "label": -1, "key": video.path.stem, "skipped": 0}


def clips_per_s(loader: torch.utils.data.DataLoader, clips: int) -> float:
    """Clips per second after the first clip arrives (worker start-up excluded)."""
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    count = sum(1 for _ in iterator)
    if count != clips - 1:
        raise RuntimeError(f"the loader gave {count + 1} clips, expected {clips}")
    return count / (time.perf_counter() - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", help="folder with manifest.json, or a brace pattern of .tar shards")
    parser.add_argument("--videos", type=Path, help="folder of .mp4 files (the same videos as --shards)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--frame-step", type=int, default=4)
    parser.add_argument("--size", type=int, default=224, help="crop size")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (0: main process)")
    parser.add_argument("--clips", type=int, default=64, help="clips timed per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per loader; medians are reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help=f"tiny run for CI: {SMOKE}")
    args = parser.parse_args(argv)
    if args.workers < 0 or min(args.frames, args.frame_step, args.size, args.rounds) < 1 or args.clips < 2:
        parser.error("--frames, --frame-step, --size, --rounds must be >= 1, --clips >= 2, --workers >= 0")
    if args.smoke:
        for name in ("frames", "size", "frame_step", "clips", "rounds"):
            setattr(args, name, SMOKE[name])
    return args


def run(args: argparse.Namespace, scratch: Path, *, command: list[str]) -> dict[str, Any]:
    if args.shards is None and args.videos is None:
        videos, frames, size = ((SMOKE["gen_videos"], SMOKE["gen_frames"], SMOKE["gen_size"]) if args.smoke
                                else (16, 64, 256))
        print(f"generating {videos} videos of {frames} frames at {size}x{size}", file=sys.stderr)
        shards, files = generate(scratch, videos=videos, frames=frames, size=size)
        data = f"generated: {videos} videos x {frames} frames at {size}x{size}, libx264, {PER_SHARD} per shard"
    elif args.videos is None:
        shards, files = args.shards, unpack_shards(shard_urls(args.shards), scratch / "videos")
        data = f"shards {args.shards}, unpacked to files"
    elif args.shards is None:
        shards, files = pack_videos(args.videos, scratch / "shards")
        data = f"videos {args.videos}, packed into shards"
    else:
        shards, files = args.shards, video_files(args.videos)
        data = f"shards {args.shards} and videos {args.videos}"
    transform = ClipTransform(size=args.size, mean=MEAN, std=STD)
    stream = clip_stream(shards, clip_len=args.frames, frame_step=args.frame_step, transform=transform,
                         resampled=True, epoch_samples=args.clips, seed=args.seed)
    baseline = FileClips(files, clip_len=args.frames, frame_step=args.frame_step, transform=transform, seed=args.seed)
    shard_rates, file_rates = [], []
    for round_index in range(args.rounds):
        stream.set_epoch(round_index)
        shard_rates.append(clips_per_s(
            torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers), args.clips))
        draws = range(round_index * args.clips, (round_index + 1) * args.clips)
        file_rates.append(clips_per_s(torch.utils.data.DataLoader(
            baseline, batch_size=None, sampler=draws, num_workers=args.workers), args.clips))
        print(f"round {round_index}: shards {shard_rates[-1]:.2f} clips/s, files {file_rates[-1]:.2f} clips/s",
              file=sys.stderr)
    shards_rate, files_rate = statistics.median(shard_rates), statistics.median(file_rates)
    per = max(args.workers, 1)
    return {
        "benchmark": "video_loader",
        "command": command,
        "device": f"cpu: {device_name(torch.device('cpu'))}",
        "torch": torch.__version__,
        "config": {"frames": args.frames, "frame_step": args.frame_step, "size": args.size, "workers": args.workers,
                   "clips": args.clips, "rounds": args.rounds, "videos": len(files), "data": data},
        "shards_clips_per_s": round(shards_rate, 3),
        "files_clips_per_s": round(files_rate, 3),
        "shards_clips_per_s_per_worker": round(shards_rate / per, 3),
        "files_clips_per_s_per_worker": round(files_rate / per, 3),
        "ratio": round(shards_rate / files_rate, 3),
        "decoder": available_backend(),
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="video_loader_") as scratch:
        result = run(args, Path(scratch), command=["python", "-m", "benchmarks.video_loader", *argv])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
