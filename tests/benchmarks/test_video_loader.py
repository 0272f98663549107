"""The video loader benchmark: one JSON line from the smoke run, and the data paths it can be given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# The repo root must come first: plain `pytest` does not put it on sys.path, and there the folder
# tests/benchmarks/ would otherwise be imported as a namespace package called `benchmarks`.
ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.video_loader import SMOKE, generate, main, pack_videos, unpack_shards  # noqa: E402
from jepa.data.shards import shard_urls  # noqa: E402
from jepa.data.video import decode_frames  # noqa: E402

KEYS = {"command", "device", "config", "shards_clips_per_s", "files_clips_per_s", "ratio", "decoder"}


def test_smoke_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--smoke"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    report = json.loads(lines[0])
    assert KEYS <= report.keys()
    assert report["command"][-1] == "--smoke" and report["device"]
    assert report["config"]["frames"] == SMOKE["frames"] and report["config"]["size"] == SMOKE["size"]
    assert report["config"]["videos"] == SMOKE["gen_videos"]
    assert report["shards_clips_per_s"] > 0 and report["files_clips_per_s"] > 0
    assert report["ratio"] == pytest.approx(report["shards_clips_per_s"] / report["files_clips_per_s"], rel=1e-2)
    assert report["decoder"] in ("decord", "pyav")


def test_shards_and_files_hold_the_same_videos(tmp_path: Path) -> None:
    shards, files = generate(tmp_path / "gen", videos=3, frames=6, size=32)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["num_samples"] == 3 and [s["num_samples"] for s in manifest["shards"]] == [3]
    unpacked = unpack_shards(shard_urls(shards), tmp_path / "unpacked")
    assert [f.num_frames for f in unpacked] == [6, 6, 6]
    assert [f.path.read_bytes() for f in unpacked] == [f.path.read_bytes() for f in files]
    repacked, probed = pack_videos(files[0].path.parent, tmp_path / "repacked")
    assert [f.num_frames for f in probed] == [6, 6, 6]
    assert json.loads((repacked / "manifest.json").read_text())["num_samples"] == 3
    first = decode_frames(files[0].path, [0, 5])
    assert first.shape == (2, 32, 32, 3) and not (first[0] == first[1]).all()  # the pattern moves


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--clips", "1"])
