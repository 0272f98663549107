"""H.264 clips with PyAV: encode arrays, probe files or bytes, and transcode (resize, resample, cut).

Shards store H.264 in MP4 because every decoder we read with (decord, PyAV) handles it and
it is small; yuv420p, the only layout all players accept, needs even frame sizes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PASS_THROUGH_FORMATS = {"mov", "mp4"}
Source = str | os.PathLike | bytes


def _rate(fps: float) -> Fraction:
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return Fraction(fps).limit_denominator(100_000)


def _check_crf(crf: int) -> None:
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an integer in [0, 51] (lower is better quality), got {crf!r}")


def _encode_frames(frames: Iterable[av.VideoFrame], *, width: int, height: int, fps: float, crf: int, preset: str) -> bytes:
    """Mux ``frames`` (any pixel format; converted to yuv420p) as H.264 in an in-memory MP4."""
    if width % 2 or height % 2:
        raise ValueError(f"H.264 with yuv420p needs even frame sizes, got {width}x{height}; crop or pad by one pixel")
    rate = _rate(fps)
    buffer = io.BytesIO()
    count = 0
    with av.open(buffer, mode="w", format="mp4") as container:
        # one encoder thread: for short, small clips more threads only add start-up cost and frame delay
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset, "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for count, frame in enumerate(frames, start=1):
            # one scaler thread: for small clips starting threads costs more than the conversion
            frame = frame.reformat(width=width, height=height, format="yuv420p", threads=1)
            frame.pts, frame.time_base = count - 1, 1 / rate
            container.mux(stream.encode(frame))
        if count == 0:
            raise ValueError("no frames to encode")
        container.mux(stream.encode(None))
    return buffer.getvalue()


def encode_mp4(frames: np.ndarray, fps: float, *, crf: int = 18, preset: str = "medium") -> bytes:
    """H.264 MP4 bytes of ``frames``: uint8 [T, H, W] (grey) or [T, H, W, 3] (RGB), H and W even."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)):
        raise ValueError(f"frames must be [T, H, W] or [T, H, W, 3], got shape {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames is empty (T = 0)")
    _check_crf(crf)
    pixel_format = "gray" if frames.ndim == 3 else "rgb24"
    height, width = frames.shape[1:3]
    video = (av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=pixel_format) for f in frames)
    return _encode_frames(video, width=width, height=height, fps=fps, crf=crf, preset=preset)


def _open(source: Source) -> av.container.InputContainer:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(source)), mode="r")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"empty file (0 bytes): {path}")
    return av.open(str(path), mode="r")


def _video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ValueError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def probe_video(source: Source, *, decode: bool = False) -> dict:
    """fps, num_frames, height, width, codec and container of a file or bytes.

    The frame count comes from the container unless it has none or ``decode`` is set;
    decoding is slower but also proves every frame is readable and gives the count a
    decoder will really see (edit lists can make the two differ).
    """
    with _open(source) as container:
        stream = _video_stream(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise ValueError("the video stream has no frame rate")
        num_frames = stream.frames
        if decode or num_frames <= 0:
            num_frames = sum(1 for _ in container.decode(stream))
        if num_frames <= 0:
            raise ValueError("no decodable video frames")
        return {
            "fps": float(rate),
            "num_frames": int(num_frames),
            "height": int(stream.height),
            "width": int(stream.width),
            "codec": stream.codec_context.name,
            "container": container.format.name,
        }


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def output_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) with the short side at ``short_side`` (or unchanged), aspect kept, both even."""
    if short_side is None:
        return max(2, height - height % 2), max(2, width - width % 2)
    if height <= width:
        return short_side, _even(width * short_side / height)
    return _even(height * short_side / width), short_side


def _resampled(frames: Iterable[av.VideoFrame], src_fps: float, fps: float | None) -> Iterator[av.VideoFrame]:
    """Frames at ``fps``: output frame k shows the source frame at time k / fps (dropping or repeating)."""
    if fps is None:
        yield from frames
        return
    step = src_fps / fps
    k = 0
    for index, frame in enumerate(frames):
        while int(k * step + 1e-6) == index:
            yield frame
            k += 1


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validate_options(short_side: int | None, fps: float | None, max_frames: int | None) -> None:
    """Reject impossible transcode options before any work (not once per file)."""
    if short_side is not None and not (_is_int(short_side, 2) and short_side % 2 == 0):
        raise ValueError(f"short_side must be an even integer >= 2 (H.264 yuv420p needs even sizes), got {short_side!r}")
    if fps is not None:
        _rate(fps)
    if max_frames is not None and not _is_int(max_frames, 1):
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")


def transcode(
    source: Source,
    *,
    short_side: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    crf: int = 18,
    preset: str = "medium",
) -> bytes:
    """Re-encode as H.264 MP4: short side resized to ``short_side`` (aspect kept), resampled to ``fps``,
    cut to the first ``max_frames``; each option left None leaves that property as it was."""
    validate_options(short_side, fps, max_frames)
    _check_crf(crf)
    with _open(source) as container:
        stream = _video_stream(container)
        src_fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
        if src_fps <= 0:
            raise ValueError("the video stream has no frame rate")
        height, width = output_size(stream.height, stream.width, short_side)
        frames = _resampled(container.decode(stream), src_fps, fps)
        if max_frames is not None:
            frames = (frame for _, frame in zip(range(max_frames), frames))
        scaled = (f.reformat(width=width, height=height, format="yuv420p", interpolation="AREA") for f in frames)
        return _encode_frames(scaled, width=width, height=height, fps=fps or src_fps, crf=crf, preset=preset)


def prepare_video(
    source: Source,
    *,
    short_side: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    reencode: bool = False,
    verify: bool = True,
    crf: int = 18,
) -> tuple[bytes, dict]:
    """(H.264 MP4 bytes, probe) for a shard: the original bytes when they already are H.264 in MP4/MOV
    and nothing else is asked, else a transcode. ``verify`` decodes every frame of kept originals."""
    validate_options(short_side, fps, max_frames)
    if isinstance(source, bytes):
        data = source
    elif Path(source).is_file():
        data = Path(source).read_bytes()
    else:
        raise FileNotFoundError(f"no such file: {source}")
    if not data:
        raise ValueError("empty file (0 bytes)")
    info = probe_video(data, decode=verify)
    keep = (
        not reencode
        and short_side is None
        and fps is None
        and max_frames is None
        and info["codec"] == "h264"
        and PASS_THROUGH_FORMATS & set(info["container"].split(","))
    )
    if not keep:
        data = transcode(data, short_side=short_side, fps=fps, max_frames=max_frames, crf=crf)
        info = probe_video(data)
    return data, info
