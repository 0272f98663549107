"""Streaming clips from webdataset shards: bad data counted not fatal, exact splits over ranks x workers, epochs."""

import io
import json
import logging
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import webdataset as wds

from jepa.data.shards import BadSampleLog, clip_stream, collate_clips, parse_meta, shard_urls
from jepa.data.video import ClipTransform

CLIP_LEN, SIZE = 2, 16


def noise(num_frames: int, seed: int) -> bytes:
    """A tiny H.264 mp4 of 32 x 32 noise."""
    return encode(np.random.default_rng(seed).integers(0, 255, (num_frames, 32, 32, 3), dtype=np.uint8))


def encode(frames: np.ndarray) -> bytes:
    """H.264 mp4 bytes of uint8 frames [T, 32, 32, 3] at 25 fps."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


GOOD = noise(6, seed=0)


def meta(num_frames: int = 6, label: int | None = 1) -> bytes:
    return json.dumps({"fps": 25.0, "num_frames": num_frames, "height": 32, "width": 32, "label": label,
                       "labels": {} if label is None else {"class": label}, "source": "test"}).encode()


def write_shard(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as writer:
        for sample in samples:
            writer.write(sample)
    return path


def good_sample(key: str, label: int | None = 1) -> dict:
    return {"__key__": key, "mp4": GOOD, "json": meta(label=label)}


def write_good_shards(folder: Path, num_shards: int, per_shard: int) -> list[str]:
    return [str(write_shard(folder / f"shard-{s:06d}.tar", [good_sample(f"s{s}_{i}") for i in range(per_shard)]))
            for s in range(num_shards)]


def stream(urls, **options):
    options.setdefault("frame_step", 2)
    return clip_stream(urls, clip_len=CLIP_LEN, transform=ClipTransform(size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3),
                       **options)


def read_all(dataset, num_workers: int = 0) -> list[dict]:
    return list(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers))


@pytest.mark.parametrize("bad_position", [1, 4])  # in the middle, and last (carried by the previous item)
def test_corrupt_clip_is_counted_and_good_ones_all_stream(tmp_path, bad_position):
    samples = [good_sample(f"k{i}") for i in range(4)]
    samples.insert(bad_position, {"__key__": "bad", "mp4": GOOD[: len(GOOD) // 2], "json": meta()})
    items = read_all(stream([str(write_shard(tmp_path / "a.tar", samples))]))
    assert sorted(item["key"] for item in items) == ["k0", "k1", "k2", "k3"]
    assert sum(item["skipped"] for item in items) == 1
    assert items[0]["video"].shape == (3, CLIP_LEN, SIZE, SIZE) and items[0]["label"] == 1


def test_bad_members_and_metadata_are_counted(tmp_path):
    samples = [
        good_sample("ok0"), {"__key__": "no_json", "mp4": GOOD}, {"__key__": "no_mp4", "json": meta()},
        {"__key__": "bad_json", "mp4": GOOD, "json": b"{not json"}, good_sample("ok1", label=None),
        {"__key__": "no_frames", "mp4": GOOD, "json": meta(num_frames=0)},
        {"__key__": "lying", "mp4": GOOD, "json": meta(num_frames=60)},  # frames past the real end
    ]
    items = read_all(stream([str(write_shard(tmp_path / "a.tar", samples))], frame_step=20))
    assert [item["key"] for item in items] == ["ok0", "ok1"]
    assert [item["label"] for item in items] == [1, -1]
    assert sum(item["skipped"] for item in items) == 5


def test_short_video_pads_or_is_skipped(tmp_path):
    short = {"__key__": "short", "mp4": noise(3, seed=1), "json": meta(num_frames=3)}
    url = str(write_shard(tmp_path / "a.tar", [good_sample("long"), short]))
    padded = read_all(stream([url], frame_step=4))  # span (2 - 1) * 4 + 1 = 5 > 3 frames
    assert [item["key"] for item in padded] == ["long", "short"]
    assert padded[1]["video"].shape == (3, CLIP_LEN, SIZE, SIZE)
    skipped = read_all(stream([url], frame_step=4, short="skip"))
    assert [item["key"] for item in skipped] == ["long"] and skipped[0]["skipped"] == 1


def test_non_tar_and_missing_shards_are_counted_and_skipped(tmp_path, caplog):
    urls = write_good_shards(tmp_path, 2, 2)
    (tmp_path / "text.tar").write_text("not a tar archive\n" * 40)
    urls[1:1] = [str(tmp_path / "text.tar"), str(tmp_path / "missing.tar")]
    with caplog.at_level(logging.WARNING, logger="jepa.data.shards"):
        items = read_all(stream(urls))
    assert sorted(item["key"] for item in items) == ["s0_0", "s0_1", "s1_0", "s1_1"]
    assert sum(item["skipped"] for item in items) == 2
    assert "text.tar" in caplog.text and "missing.tar" in caplog.text


@pytest.mark.parametrize("num_shards", [4, 8])
def test_two_ranks_two_workers_see_every_sample_once(tmp_path, num_shards):
    urls = write_good_shards(tmp_path, num_shards, 3)
    seen = Counter()
    for rank in range(2):
        dataset = stream(urls, shuffle_buffer=4, seed=3, rank=rank, world_size=2)
        seen.update(item["key"] for item in read_all(dataset, num_workers=2))
    assert seen == Counter(f"s{s}_{i}" for s in range(num_shards) for i in range(3))


def test_too_few_shards_for_the_readers_is_a_clear_error(tmp_path):
    dataset = stream(write_good_shards(tmp_path, 3, 1), rank=0, world_size=2)
    message = r"3 shards cannot be split over 2 ranks x 2 workers = 4 readers; use resampled=True or make at least 4"
    with pytest.raises(ValueError, match=message):
        read_all(dataset, num_workers=2)
    with pytest.raises(ValueError, match="over 2 ranks x 1 workers"):
        read_all(stream(write_good_shards(tmp_path, 1, 1), rank=1, world_size=2))


def test_resampled_epochs_have_the_per_rank_length(tmp_path):
    urls = write_good_shards(tmp_path, 2, 3)
    for rank in range(2):
        dataset = stream(urls, resampled=True, epoch_samples=7, shuffle_buffer=2, rank=rank, world_size=2)
        assert len(read_all(dataset, num_workers=2)) == 7
    assert len(read_all(stream(urls, resampled=True, epoch_samples=5))) == 5
    with pytest.raises(ValueError, match="resampled=True"):
        stream(urls, epoch_samples=5)


def test_order_follows_seed_and_epoch(tmp_path):
    urls = write_good_shards(tmp_path, 4, 3)

    def keys(seed: int, epoch: int) -> list[str]:
        dataset = stream(urls, shuffle_buffer=5, seed=seed)
        dataset.set_epoch(epoch)
        return [item["key"] for item in read_all(dataset)]

    first = keys(0, 0)
    assert first == keys(0, 0) and sorted(first) == sorted(keys(0, 1))
    assert first != keys(0, 1) and first != keys(1, 0)
    videos = [item["video"] for item in read_all(stream(urls, seed=5))]
    assert all(torch.equal(a, b["video"]) for a, b in zip(videos, read_all(stream(urls, seed=5))))


def test_collate_stacks_and_sums_skipped(tmp_path):
    url = str(write_shard(tmp_path / "a.tar", [good_sample("a"), {"__key__": "bad", "mp4": b"x"}, good_sample("b")]))
    (batch,) = list(torch.utils.data.DataLoader(stream([url]), batch_size=2, collate_fn=collate_clips))
    assert batch["video"].shape == (2, 3, CLIP_LEN, SIZE, SIZE)
    assert batch["label"].tolist() == [1, 1] and batch["key"] == ["a", "b"] and int(batch["skipped"]) == 1


def test_shard_urls_from_pattern_list_and_manifest(tmp_path):
    urls = write_good_shards(tmp_path, 3, 1)
    assert shard_urls(f"{tmp_path}/shard-{{000000..000002}}.tar") == urls
    assert shard_urls([Path(u) for u in urls]) == urls
    manifest = {"num_samples": 3, "shards": [{"name": Path(u).name, "num_samples": 1, "bytes": 1} for u in urls]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert shard_urls(tmp_path) == urls
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        shard_urls(tmp_path / "empty")


def test_arguments_are_validated(tmp_path):
    url = write_good_shards(tmp_path, 1, 1)
    with pytest.raises(ValueError, match="exactly one of frame_step and target_fps"):
        stream(url, target_fps=5.0)
    with pytest.raises(ValueError, match="both rank and world_size"):
        stream(url, rank=0)
    with pytest.raises(ValueError, match="outside world size"):
        stream(url, rank=2, world_size=2)
    with pytest.raises(ValueError, match="short"):
        stream(url, short="drop")
    assert parse_meta(meta(label=None)).label == -1


def test_bad_sample_log_warns_first_then_every_nth(caplog):
    log = BadSampleLog(reader="r0", first=2, every=3)
    with caplog.at_level(logging.WARNING, logger="jepa.data.shards"):
        for _ in range(7):
            log.record("sample", ValueError("boom"))
    assert len(caplog.records) == 4  # 1, 2, 3, 6
    assert log.take() == 7 and log.take() == 0


def test_target_fps_sets_the_frame_step(tmp_path):
    # Frame t is a flat grey of 20t, so the decoded brightness tells which frames a clip took.
    grey = encode(np.stack([np.full((32, 32, 3), 20 * t, dtype=np.uint8) for t in range(10)]))
    sample = {"__key__": "grey", "mp4": grey, "json": meta(num_frames=10)}
    url = str(write_shard(tmp_path / "a.tar", [sample]))
    dataset = clip_stream(url, clip_len=3, target_fps=12.5, transform=lambda clip: clip.float().mean(dim=(1, 2, 3)))
    for seed in range(3):
        dataset.set_epoch(seed)
        (item,) = read_all(dataset)
        assert item["video"].diff().tolist() == pytest.approx([40.0, 40.0], abs=3)  # 25 fps -> 12.5: every 2nd
