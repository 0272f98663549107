"""Video folders or CSV lists -> webdataset shards, with every unreadable file reported, never fatal.

A folder input is searched recursively; when every video sits below a class sub-folder
(``DIR/<class>/...``) the class index (sorted names) is the label. A CSV input has rows
``path[,label]`` (comma- or tab-separated, optional ``path,label`` header, paths relative
to the CSV's folder, labels integers or class names).
"""

from __future__ import annotations

import csv
import os
import random
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from jepa.data.shard_writer import ShardWriter, write_json_atomic
from jepa.data.video_encode import prepare_video, validate_options

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
REPORT = "report.json"


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int | None


@dataclass(frozen=True)
class VideoList:
    """The videos to convert, in a fixed order, and the class names their labels index (None: bare integers)."""

    items: list[VideoItem]
    label_names: list[str] | None


def list_folder(root: str | os.PathLike) -> VideoList:
    """Every video file below ``root`` (hidden files and folders skipped), labelled by class sub-folder."""
    root = Path(root)
    paths = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        paths += [Path(folder, f) for f in sorted(files) if not f.startswith(".") and f.lower().endswith(VIDEO_EXTENSIONS)]
    if not paths:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) under {root}")
    relative = [p.relative_to(root) for p in paths]
    nested = [len(r.parts) > 1 for r in relative]
    if not all(nested):
        if any(nested):
            warnings.warn(f"{root} has videos at its top level and in sub-folders; all are left unlabelled", stacklevel=2)
        return VideoList([VideoItem(p, None) for p in paths], None)
    classes = sorted({r.parts[0] for r in relative})
    index = {name: i for i, name in enumerate(classes)}
    return VideoList([VideoItem(p, index[r.parts[0]]) for p, r in zip(paths, relative)], classes)


def _rows(text: str) -> list[tuple[int, list[str]]]:
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        return []
    delimiter = "\t" if "\t" in lines[0][1] and "," not in lines[0][1] else ","
    rows = [(n, [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))]) for n, line in lines]
    if rows[0][1][0].lower() == "path":
        rows = rows[1:]
    return rows


def read_csv(csv_path: str | os.PathLike) -> VideoList:
    """Rows ``path[,label]``; integer labels are kept, names become indices into their sorted set."""
    csv_path = Path(csv_path)
    rows = _rows(csv_path.read_text(encoding="utf-8-sig"))
    if not rows:
        raise ValueError(f"{csv_path} lists no videos")
    for number, cells in rows:
        if len(cells) > 2 or not cells[0]:
            raise ValueError(f"{csv_path}:{number}: expected 'path[,label]', got {cells}")
    paths = [Path(os.path.expanduser(cells[0])) for _, cells in rows]
    paths = [p if p.is_absolute() else csv_path.parent / p for p in paths]
    raw = [cells[1] if len(cells) == 2 and cells[1] else None for _, cells in rows]
    given = [r for r in raw if r is not None]
    if all(re.fullmatch(r"\d+", r) for r in given):
        return VideoList([VideoItem(p, None if r is None else int(r)) for p, r in zip(paths, raw)], None)
    names = sorted(set(given))
    index = {name: i for i, name in enumerate(names)}
    return VideoList([VideoItem(p, None if r is None else index[r]) for p, r in zip(paths, raw)], names)


def collect_videos(source: str | os.PathLike) -> VideoList:
    """A folder (searched recursively) or, for a file, a CSV list of videos."""
    source = Path(source)
    if source.is_dir():
        return list_folder(source)
    if source.is_file() and source.suffix.lower() in VIDEO_EXTENSIONS:
        raise ValueError(f"input {source} is a video; pass the folder that holds it or a CSV that lists it")
    if source.is_file():
        return read_csv(source)
    raise FileNotFoundError(f"input {source} is neither a folder nor a CSV file")


def _key(index: int, path: Path) -> str:
    """Unique (by index) and readable (by file name) sample key with no dots."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:48].strip("_")
    return f"{index:07d}-{stem}" if stem else f"{index:07d}"


def _convert(item: VideoItem, **options) -> tuple[bytes, dict] | str:
    """(mp4 bytes, probe) or the error text: any failure of one file must not end the run."""
    try:
        return prepare_video(item.path, **options)
    except Exception as err:  # noqa: BLE001 - decoders raise many types; each becomes a report line
        return f"{type(err).__name__}: {err}"


def _ordered_map(fn: Callable, items: list, workers: int) -> Iterator:
    """``map(fn, items)`` over ``workers`` processes, in order, with at most 2 x workers results pending."""
    if workers == 1:
        yield from map(fn, items)
        return
    with ProcessPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass(frozen=True)
class ConversionResult:
    num_ok: int
    num_failed: int
    output: Path
    manifest: dict
    report: dict

    @property
    def num_shards(self) -> int:
        return len(self.manifest["shards"])

    def summary(self) -> str:
        line = f"ok {self.num_ok}, failed {self.num_failed}, shards {self.num_shards}, output {self.output}"
        return line + (f" (failures in {self.output / REPORT})" if self.num_failed else "")


def videos_to_shards(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    short_side: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    reencode: bool = False,
    verify: bool = True,
    shard_bytes: int | None = 256 * 2**20,
    shard_samples: int | None = None,
    prefix: str = "clips",
    shuffle: bool = True,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert every video of ``source`` into shards in ``out_dir`` plus manifest.json and report.json.

    Originals that already are H.264 MP4 are stored as they are (after a full decode when
    ``verify``); anything else, or any resize/fps/max_frames request, is re-encoded. The
    write order is shuffled (``seed``) so that shards mix classes; keys keep the input order.
    """
    validate_options(short_side, fps, max_frames)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    videos = collect_videos(source)
    keyed = [(_key(i, item.path), item) for i, item in enumerate(videos.items)]
    if shuffle:
        random.Random(seed).shuffle(keyed)
    convert = partial(_convert, short_side=short_side, fps=fps, max_frames=max_frames, reencode=reencode, verify=verify)
    failed, out_dir = [], Path(out_dir)
    writer = ShardWriter(out_dir, prefix=prefix, max_samples=shard_samples, max_bytes=shard_bytes,
                         label_names={"label": videos.label_names}, overwrite=overwrite)
    with writer, tqdm(total=len(keyed), desc="videos -> shards", unit="video", disable=not progress) as bar:
        for (key, item), result in zip(keyed, _ordered_map(convert, [item for _, item in keyed], workers)):
            if isinstance(result, str):
                failed.append({"source": str(item.path), "error": result})
            else:
                data, info = result
                meta = {name: info[name] for name in ("fps", "num_frames", "height", "width")}
                writer.write(key, data, {**meta, "label": item.label, "labels": {}, "source": str(item.path)})
            bar.update()
            bar.set_postfix(ok=writer.num_samples, failed=len(failed), refresh=False)
    report = {"failed": sorted(failed, key=lambda f: f["source"]), "num_ok": writer.num_samples, "num_failed": len(failed)}
    write_json_atomic(out_dir / REPORT, report)
    return ConversionResult(writer.num_samples, len(failed), out_dir, writer.manifest, report)
