import io

import av
import numpy as np
import pytest

from jepa.data.video_encode import encode_mp4, output_size, prepare_video, probe_video, transcode


def decode(data: bytes) -> tuple[np.ndarray, tuple[str, str]]:
    """All frames as RGB [T, H, W, 3] and (codec, container) names, decoded with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, (stream.codec_context.name, container.format.name)


def ramp(frames: int = 12, height: int = 40, width: int = 60) -> np.ndarray:
    """Smooth RGB frames whose brightness encodes the frame index (20 grey levels per frame)."""
    y, x = np.mgrid[:height, :width]
    base = np.stack([x * 2, y * 2, np.full_like(x, 40)], axis=-1)
    return np.stack([np.clip(base + 15 * t, 0, 255) for t in range(frames)]).astype(np.uint8)


def test_rgb_and_grey_round_trip():
    rgb = ramp()
    frames, (codec, container) = decode(encode_mp4(rgb, 8.0))
    assert codec == "h264" and "mp4" in container
    assert frames.shape == rgb.shape
    assert np.abs(frames.astype(int) - rgb).mean() < 3
    grey = rgb[..., 0]
    frames, _ = decode(encode_mp4(grey, 8.0))
    assert frames.shape == (*grey.shape, 3)
    assert np.abs(frames[..., 1].astype(int) - grey).mean() < 3


@pytest.mark.parametrize(
    ("frames", "fps", "match"),
    [
        (np.zeros((2, 5, 4), np.uint8), 8.0, "even"),
        (np.zeros((2, 4, 4), np.float32), 8.0, "uint8"),
        (np.zeros((0, 4, 4), np.uint8), 8.0, "empty"),
        (np.zeros((2, 4, 4, 4), np.uint8), 8.0, "shape"),
        (np.zeros((2, 4, 4), np.uint8), 0.0, "fps"),
    ],
)
def test_encode_rejects_bad_input(frames, fps, match):
    with pytest.raises(ValueError, match=match):
        encode_mp4(frames, fps)


def test_probe_bytes_and_path_with_and_without_decoding(tmp_path):
    data = encode_mp4(ramp(frames=10), 12.5)
    (tmp_path / "v.mp4").write_bytes(data)
    for source in (data, tmp_path / "v.mp4"):
        for decode_all in (False, True):
            info = probe_video(source, decode=decode_all)
            assert (info["fps"], info["num_frames"], info["height"], info["width"]) == (12.5, 10, 40, 60)
    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        probe_video(tmp_path / "empty.mp4")


@pytest.mark.parametrize(
    ("size", "short_side", "expected"),
    [((720, 1280), 64, (64, 114)), ((1280, 720), 64, (114, 64)), ((144, 176), None, (144, 176)), ((143, 175), None, (142, 174))],
)
def test_output_size_keeps_aspect_with_even_sides(size, short_side, expected):
    assert output_size(*size, short_side) == expected


def test_transcode_resizes_resamples_and_cuts():
    data = encode_mp4(ramp(frames=12), 8.0)
    frames, _ = decode(transcode(data, short_side=20))
    assert frames.shape == (12, 20, 30, 3)
    info = probe_video(transcode(data, short_side=20, fps=4.0))
    assert (info["fps"], info["num_frames"]) == (4.0, 6)
    # halving the rate keeps every other frame: brightness steps 30 levels per output frame
    frames, _ = decode(transcode(data, fps=4.0))
    assert np.allclose(np.diff(frames[..., 2].mean(axis=(1, 2))), 30, atol=3)
    assert probe_video(transcode(data, fps=16.0))["num_frames"] == 24
    assert probe_video(transcode(data, max_frames=5))["num_frames"] == 5
    with pytest.raises(ValueError, match="even"):
        transcode(data, short_side=21)


def test_prepare_keeps_h264_mp4_bytes_and_reencodes_everything_else(tmp_path):
    data = encode_mp4(ramp(frames=6), 8.0)
    (tmp_path / "v.mp4").write_bytes(data)
    kept, info = prepare_video(tmp_path / "v.mp4")
    assert kept == data and info["num_frames"] == 6
    redone, info = prepare_video(tmp_path / "v.mp4", reencode=True)
    assert redone != data and info["codec"] == "h264" and info["num_frames"] == 6
    resized, info = prepare_video(tmp_path / "v.mp4", short_side=20)
    assert (info["height"], info["width"]) == (20, 30)

    mkv = tmp_path / "v.mkv"  # H.264 but in Matroska: the shard format wants MP4
    with av.open(str(mkv), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 60, 40, "yuv420p"
        for frame in ramp(frames=6):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    converted, info = prepare_video(mkv)
    assert decode(converted)[1][1].startswith("mov,mp4") and info["num_frames"] == 6

    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        prepare_video(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(av.error.FFmpegError):
        prepare_video(tmp_path / "text.mp4")
