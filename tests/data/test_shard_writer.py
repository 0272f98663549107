import json
import tarfile

import pytest
import webdataset as wds

from jepa.data.shard_writer import FORMAT, MANIFEST, ShardWriter


def meta(i: int, label: int | None = 0) -> dict:
    return {"fps": 8.0, "num_frames": 4, "height": 2, "width": 2, "label": label, "labels": {}, "source": f"s{i}"}


def tar_contents(folder) -> dict[str, list[str]]:
    """shard name -> member names, read with tarfile (independent of the writer)."""
    out = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            out[path.name] = tar.getnames()
    return out


def test_rolls_by_samples_and_manifest_matches_the_tars(tmp_path):
    with ShardWriter(tmp_path, max_samples=3, max_bytes=None, label_names={"label": ["a", "b"]}) as writer:
        for i in range(7):
            writer.write(f"k{i}", b"x" * (100 + i), meta(i, label=i % 2))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest == writer.manifest
    assert manifest["format"] == FORMAT and manifest["version"] == 1 and manifest["num_samples"] == 7
    assert manifest["label_names"] == {"label": ["a", "b"]}
    contents = tar_contents(tmp_path)
    assert [s["name"] for s in manifest["shards"]] == ["clips-000000.tar", "clips-000001.tar", "clips-000002.tar"]
    assert list(contents) == [s["name"] for s in manifest["shards"]]
    for shard in manifest["shards"]:
        members = contents[shard["name"]]
        assert len(members) == 2 * shard["num_samples"]
        assert shard["bytes"] == (tmp_path / shard["name"]).stat().st_size
    assert [s["num_samples"] for s in manifest["shards"]] == [3, 3, 1]
    keys = [m.rsplit(".", 1)[0] for members in contents.values() for m in members if m.endswith(".mp4")]
    assert sorted(keys) == [f"k{i}" for i in range(7)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*contents, MANIFEST]  # no temporary files left


def test_rolls_by_bytes_without_exceeding_the_target(tmp_path):
    # each sample takes 512 + 3072 (mp4) + 512 + 512 (json) = 4608 tar bytes: two fit in 10,000
    with ShardWriter(tmp_path, max_bytes=10_000) as writer:
        for i in range(5):
            writer.write(f"k{i}", b"y" * 3000, meta(i))
        writer.write("big", b"z" * 20_000, meta(5))  # larger than the target: a shard of its own
        writer.write("after", b"w" * 10, meta(6))
    counts = [s["num_samples"] for s in writer.manifest["shards"]]
    assert counts == [2, 2, 1, 1, 1]
    for name in list(tar_contents(tmp_path))[:2]:
        with tarfile.open(tmp_path / name) as tar:
            used = sum(512 + -(-m.size // 512) * 512 for m in tar.getmembers())
        assert used <= 10_000


def test_webdataset_reads_what_was_written(tmp_path):
    with ShardWriter(tmp_path, max_samples=2, prefix="train") as writer:
        for i in range(3):
            writer.write(f"clip_{i}", bytes([i + 1]) * 10, meta(i, label=None))
    urls = [str(tmp_path / s["name"]) for s in writer.manifest["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["clip_0", "clip_1", "clip_2"]
    assert samples[1]["mp4"] == b"\x02" * 10
    assert json.loads(samples[2]["json"]) == meta(2, label=None)


@pytest.mark.parametrize("key", ["a.b", "", "a/b", "with space", 7])
def test_rejects_bad_keys(tmp_path, key):
    with ShardWriter(tmp_path) as writer, pytest.raises(ValueError, match="key"):
        writer.write(key, b"x", meta(0))


def test_rejects_duplicates_missing_fields_and_unnamed_labels(tmp_path):
    with ShardWriter(tmp_path, label_names={"label": None, "speed": ["slow", "fast"]}) as writer:
        writer.write("a", b"x", {**meta(0), "labels": {"speed": 1}})
        with pytest.raises(ValueError, match="duplicate key 'a'"):
            writer.write("a", b"x", meta(1))
        with pytest.raises(ValueError, match="lacks \\['fps'\\]"):
            writer.write("b", b"x", {k: v for k, v in meta(1).items() if k != "fps"})
        with pytest.raises(ValueError, match="colour"):
            writer.write("c", b"x", {**meta(2), "labels": {"colour": 0}})
        with pytest.raises(ValueError, match="non-empty bytes"):
            writer.write("d", b"", meta(3))
    assert writer.manifest["num_samples"] == 1


@pytest.mark.parametrize("kwargs", [{"max_samples": 0}, {"max_bytes": -1}, {"max_samples": 2.5}, {"prefix": "a.b"}])
def test_rejects_bad_options(tmp_path, kwargs):
    with pytest.raises(ValueError):
        ShardWriter(tmp_path, **kwargs)


def test_existing_output_needs_overwrite_which_removes_stale_shards(tmp_path):
    with ShardWriter(tmp_path, max_samples=1) as writer:
        for i in range(3):
            writer.write(f"k{i}", b"x", meta(i))
    with pytest.raises(FileExistsError, match="overwrite"):
        ShardWriter(tmp_path)
    with ShardWriter(tmp_path, overwrite=True) as writer:
        writer.write("only", b"x", meta(0))
    assert list(tar_contents(tmp_path)) == ["clips-000000.tar"]
    assert json.loads((tmp_path / MANIFEST).read_text())["num_samples"] == 1


def test_an_error_mid_write_leaves_no_manifest_and_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), ShardWriter(tmp_path, max_samples=2) as writer:
        for i in range(3):
            writer.write(f"k{i}", b"x", meta(i))
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips-000000.tar"]
