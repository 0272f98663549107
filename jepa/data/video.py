"""Video clips: which frames to take, decoding them (decord, else PyAV), and augmentation shared by all frames.

Frames are decoded as uint8 ``[T, H, W, C]``; the transforms return float ``[C, T, H, W]``,
the layout the 3-D patch embedding expects once batched to ``[B, C, T, H, W]``.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

Source = str | Path | bytes
Backend = Literal["auto", "decord", "pyav"]
ShortPolicy = Literal["pad", "skip"]


class VideoError(Exception):
    """The video cannot give the requested clip; a stream drops the sample and counts it."""


class ShortVideo(VideoError):
    """The video has fewer frames than the clip spans (raised when ``short="skip"``)."""


class CorruptVideo(VideoError):
    """The decoder failed on the video (truncated or invalid data, frame count below its metadata)."""


def clip_span(*, clip_len: int, frame_step: int) -> int:
    """Frames covered by a clip from its first to its last frame."""
    _check_positive("clip_len", clip_len)
    _check_positive("frame_step", frame_step)
    return (clip_len - 1) * frame_step + 1


def clip_indices(num_frames: int, *, clip_len: int, frame_step: int, start: int) -> np.ndarray:
    """Frame indices ``start, start + step, ...``; indices past the end repeat the last frame (padding)."""
    _check_positive("num_frames", num_frames)
    span = clip_span(clip_len=clip_len, frame_step=frame_step)
    if not 0 <= start < num_frames:
        raise ValueError(f"start {start} is outside a video of {num_frames} frames")
    if span <= num_frames and start + span > num_frames:
        raise ValueError(f"a clip of {span} frames from {start} overruns a video of {num_frames} frames")
    return np.minimum(start + frame_step * np.arange(clip_len), num_frames - 1)


def sample_clip_starts(
    num_frames: int, *, clip_len: int, frame_step: int, num_clips: int = 1,
    mode: Literal["random", "uniform"] = "random", short: ShortPolicy = "pad",
    generator: np.random.Generator | None = None,
) -> list[int]:
    """First frames of ``num_clips`` clips.

    ``random`` draws each start uniformly (training; needs ``generator``); ``uniform`` spaces them
    evenly from the first to the last possible start, a single clip centred (evaluation over
    several clips). A video shorter than the clip span gives starts at 0 (``pad``: the clip then
    repeats its last frame) or raises :class:`ShortVideo` (``skip``).
    """
    _check_positive("num_frames", num_frames)
    _check_positive("num_clips", num_clips)
    if mode not in ("random", "uniform"):
        raise ValueError(f"mode must be 'random' or 'uniform', not {mode!r}")
    if short not in ("pad", "skip"):
        raise ValueError(f"short must be 'pad' or 'skip', not {short!r}")
    if mode == "random" and generator is None:
        raise ValueError("mode='random' needs a numpy generator")
    span = clip_span(clip_len=clip_len, frame_step=frame_step)
    if num_frames < span:
        if short == "skip":
            raise ShortVideo(f"{num_frames} frames, but a clip of {clip_len} frames every {frame_step} spans {span}")
        return [0] * num_clips
    last = num_frames - span
    if mode == "random":
        return [int(s) for s in generator.integers(0, last + 1, size=num_clips)]
    if num_clips == 1:
        return [last // 2]
    return [int(s) for s in np.rint(np.linspace(0, last, num_clips))]


def frame_step_for_fps(video_fps: float, target_fps: float) -> int:
    """The frame step that samples a ``video_fps`` video at about ``target_fps`` (at least 1)."""
    for name, value in (("video_fps", video_fps), ("target_fps", target_fps)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    return max(1, round(video_fps / target_fps))


@functools.cache
def _decord() -> ModuleType | None:
    """decord when importable: it only ships for Linux x86_64, PyAV is the fallback elsewhere."""
    try:
        import decord
    except ImportError:
        return None
    return decord


def available_backend() -> Literal["decord", "pyav"]:
    """The decoder ``backend="auto"`` uses: decord (1.6-3x faster on short clips) when installed."""
    return "decord" if _decord() is not None else "pyav"


def decode_frames(source: Source, indices: Sequence[int] | np.ndarray, *, backend: Backend = "auto") -> torch.Tensor:
    """Frames ``indices`` (presentation order, repeats allowed) as uint8 ``[T, H, W, C]`` RGB.

    ``source`` is a path or the encoded bytes. Any decoder failure is raised as :class:`CorruptVideo`.
    """
    wanted = np.asarray(indices)
    if wanted.ndim != 1 or wanted.size == 0 or not np.issubdtype(wanted.dtype, np.integer) or wanted.min() < 0:
        raise ValueError(f"indices must be a non-empty 1-D sequence of non-negative ints, not {indices!r}")
    chosen = available_backend() if backend == "auto" else backend
    decoders = {"decord": _decode_decord, "pyav": _decode_pyav}
    if chosen not in decoders:
        raise ValueError(f"backend must be 'auto', 'decord' or 'pyav', not {backend!r}")
    if chosen == "decord" and _decord() is None:
        raise ImportError("backend='decord' but decord is not installed (it ships for Linux x86_64 only)")
    try:
        frames = decoders[chosen](source, [int(i) for i in wanted])
    except VideoError:
        raise
    except Exception as error:  # decoder libraries raise RuntimeError, DECORDError, av.FFmpegError, ...
        raise CorruptVideo(f"{chosen} failed on {_describe(source)}: {error}") from error
    return torch.from_numpy(frames)


def count_frames(source: Source, *, backend: Backend = "auto") -> int:
    """Number of frames, for videos that come without metadata (PyAV counts by decoding if the container has no count)."""
    chosen = available_backend() if backend == "auto" else backend
    try:
        if chosen == "decord":
            return len(_decord().VideoReader(_readable(source), num_threads=1))
        with _open_av(source) as container:
            stream = container.streams.video[0]
            return stream.frames or sum(1 for _ in container.decode(stream))
    except Exception as error:
        raise CorruptVideo(f"{chosen} failed on {_describe(source)}: {error}") from error


def read_clip(
    source: Source, *, num_frames: int, clip_len: int, frame_step: int, short: ShortPolicy,
    generator: np.random.Generator, backend: Backend = "auto",
) -> torch.Tensor:
    """One random clip as uint8 ``[clip_len, H, W, C]`` from a video of ``num_frames`` frames."""
    (start,) = sample_clip_starts(
        num_frames, clip_len=clip_len, frame_step=frame_step, num_clips=1, mode="random", short=short,
        generator=generator,
    )
    indices = clip_indices(num_frames, clip_len=clip_len, frame_step=frame_step, start=start)
    return decode_frames(source, indices, backend=backend)


def _decode_decord(source: Source, indices: list[int]) -> np.ndarray:
    reader = _decord().VideoReader(_readable(source), num_threads=1)
    if max(indices) >= len(reader):
        raise CorruptVideo(f"frame {max(indices)} requested from {_describe(source)}, which has {len(reader)} frames")
    return reader.get_batch(indices).asnumpy()


def _decode_pyav(source: Source, indices: list[int]) -> np.ndarray:
    wanted, last = set(indices), max(indices)
    frames: dict[int, np.ndarray] = {}
    with _open_av(source) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i == last:
                break
    if last not in frames:
        raise CorruptVideo(f"frame {last} requested from {_describe(source)}, which decodes to fewer frames")
    return np.stack([frames[i] for i in indices])


def _open_av(source: Source):
    import av

    return av.open(_readable(source))


def _readable(source: Source) -> str | io.BytesIO:
    if isinstance(source, bytes):
        return io.BytesIO(source)
    if isinstance(source, (str, Path)):
        return str(source)
    raise TypeError(f"source must be a path or bytes, not {type(source).__name__}")


def _describe(source: Source) -> str:
    return f"{len(source)} bytes" if isinstance(source, bytes) else str(source)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")


class _FrameStackTransform:
    """Runs a torchvision v2 pipeline on a clip as one ``Video``: random parameters are drawn once per clip."""

    def __init__(self, steps: list[v2.Transform]) -> None:
        self.steps = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, H, W, C]`` -> float32 ``[C, T, H, W]``."""
        if frames.ndim != 4 or frames.dtype != torch.uint8:
            raise ValueError(f"expected uint8 frames [T, H, W, C], got {frames.dtype} {tuple(frames.shape)}")
        video = self.steps(tv_tensors.Video(frames.permute(0, 3, 1, 2)))
        return video.as_subclass(torch.Tensor).permute(1, 0, 2, 3).contiguous()


class ClipTransform(_FrameStackTransform):
    """V-JEPA's training augmentation: one random resized crop and one flip for the whole clip, then normalisation.

    The same crop on every frame keeps the motion intact, which is what the video targets are about.
    """

    def __init__(
        self, *, size: int, mean: Sequence[float], std: Sequence[float],
        scale: tuple[float, float] = (0.3, 1.0), ratio: tuple[float, float] = (0.75, 1.35), hflip: bool = True,
    ) -> None:
        _check_positive("size", size)
        _check_normalisation(mean, std)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, not {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, not {ratio}")
        steps: list[v2.Transform] = [v2.RandomResizedCrop(size, scale=scale, ratio=ratio, antialias=True)]
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        super().__init__(steps + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


class EvalClipTransform(_FrameStackTransform):
    """Deterministic evaluation view: resize the short side to ``size``, centre crop, normalise."""

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        _check_positive("size", size)
        _check_normalisation(mean, std)
        super().__init__([
            v2.Resize(size, antialias=True), v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std)),
        ])


def _check_normalisation(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != len(std) or not len(mean):
        raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
    if min(std) <= 0:
        raise ValueError(f"std must be positive, not {tuple(std)}")
