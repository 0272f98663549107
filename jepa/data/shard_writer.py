"""Video clips into webdataset tar shards of bounded size, with a manifest that lists them.

One sample is ``{key}.mp4`` (H.264 bytes) and ``{key}.json`` (metadata) in a shard named
``{prefix}-{index:06d}.tar``. Shards are written under a temporary name and renamed when
complete, and ``manifest.json`` is written last (also atomically), so a folder with a
manifest always holds exactly the shards it lists.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import webdataset as wds

FORMAT = "jepa-video-shards"
VERSION = 1
MANIFEST = "manifest.json"
META_FIELDS = ("fps", "num_frames", "height", "width", "label", "labels", "source")
TAR_BLOCK = 512
_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to a temporary file then rename it, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _member_bytes(size: int) -> int:
    """Bytes a tar member of ``size`` bytes occupies: one header block plus the data padded to blocks."""
    return TAR_BLOCK + -(-size // TAR_BLOCK) * TAR_BLOCK


def _positive_or_none(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


class ShardWriter:
    """Writes (key, mp4 bytes, metadata) samples, starting a new shard at ``max_samples`` samples or
    before a sample would take the shard past ``max_bytes`` (a single larger sample gets a shard of its own).

    ``label_names`` maps each label field ("label" and every name used in ``meta["labels"]``) to its
    class names, or None when the labels are bare integers. An output folder that already holds
    shards or a manifest is refused unless ``overwrite`` (which deletes them first).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        prefix: str = "clips",
        max_samples: int | None = None,
        max_bytes: int | None = 256 * 2**20,
        label_names: dict[str, list[str] | None] | None = None,
        overwrite: bool = False,
    ) -> None:
        if not _KEY.match(prefix):
            raise ValueError(f"prefix must be letters, digits, '_' or '-', got {prefix!r}")
        _positive_or_none("max_samples", max_samples)
        _positive_or_none("max_bytes", max_bytes)
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.label_names = {"label": None, **(label_names or {})}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._clear_previous(overwrite)
        self.shards: list[dict] = []
        self._keys: set[str] = set()
        self._tar: wds.TarWriter | None = None
        self._count = 0
        self._bytes = 0
        self.manifest: dict | None = None

    def _clear_previous(self, overwrite: bool) -> None:
        shard = re.compile(rf"^{re.escape(self.prefix)}-\d{{6}}\.tar(\.partial)?$|^{re.escape(MANIFEST)}(\.tmp)?$")
        old = sorted(p for p in self.out_dir.iterdir() if shard.match(p.name))
        if old and not overwrite:
            raise FileExistsError(
                f"{self.out_dir} already holds {old[0].name} (and {len(old) - 1} more shard/manifest files); "
                "choose another output folder or pass overwrite=True (--overwrite) to replace them"
            )
        for path in old:
            path.unlink()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    @property
    def num_samples(self) -> int:
        return sum(s["num_samples"] for s in self.shards) + self._count

    def _path(self, index: int) -> Path:
        return self.out_dir / f"{self.prefix}-{index:06d}.tar"

    def _open_shard(self) -> None:
        path = self._path(len(self.shards))
        self._tar = wds.TarWriter(str(path) + ".partial", encoder=False, mtime=0, mode=0o644)

    def _finish_shard(self) -> None:
        self._tar.close()
        self._tar = None
        path = self._path(len(self.shards))
        os.replace(str(path) + ".partial", path)
        self.shards.append({"name": path.name, "num_samples": self._count, "bytes": path.stat().st_size})
        self._count, self._bytes = 0, 0

    def _abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            Path(str(self._path(len(self.shards))) + ".partial").unlink(missing_ok=True)

    def _check(self, key: str, mp4: bytes, meta: dict) -> None:
        if self.manifest is not None:
            raise RuntimeError("the writer is closed")
        if not isinstance(key, str) or not _KEY.match(key):
            raise ValueError(f"key must be a non-empty string of letters, digits, '_' or '-' (no dots), got {key!r}")
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r}")
        if not isinstance(mp4, (bytes, bytearray)) or len(mp4) == 0:
            raise ValueError(f"mp4 for {key!r} must be non-empty bytes")
        if not isinstance(meta, dict):
            raise ValueError(f"meta for {key!r} must be a dict, got {type(meta).__name__}")
        missing = [f for f in META_FIELDS if f not in meta]
        if missing:
            raise ValueError(f"meta for {key!r} lacks {missing}; every sample needs {list(META_FIELDS)}")
        if not isinstance(meta["labels"], dict):
            raise ValueError(f"meta['labels'] for {key!r} must be a dict of name -> int, got {meta['labels']!r}")
        unnamed = [name for name in meta["labels"] if name not in self.label_names]
        if unnamed:
            raise ValueError(f"meta for {key!r} has labels {unnamed} missing from label_names {sorted(self.label_names)}")

    def write(self, key: str, mp4: bytes, meta: dict) -> None:
        """Add one sample; ``meta`` needs fps, num_frames, height, width, label, labels and source."""
        self._check(key, mp4, meta)
        meta_bytes = json.dumps(meta).encode("utf-8")
        size = _member_bytes(len(mp4)) + _member_bytes(len(meta_bytes))
        if self._tar is not None and (
            (self.max_samples is not None and self._count >= self.max_samples)
            or (self.max_bytes is not None and self._bytes + size > self.max_bytes)
        ):
            self._finish_shard()
        if self._tar is None:
            self._open_shard()
        self._tar.write({"__key__": key, "mp4": bytes(mp4), "json": meta_bytes})
        self._keys.add(key)
        self._count += 1
        self._bytes += size

    def close(self) -> dict:
        """Finish the last shard and write ``manifest.json``; returns the manifest (idempotent)."""
        if self.manifest is not None:
            return self.manifest
        if self._tar is not None:
            self._finish_shard()
        self.manifest = {
            "format": FORMAT,
            "version": VERSION,
            "num_samples": self.num_samples,
            "shards": self.shards,
            "label_names": self.label_names,
        }
        write_json_atomic(self.out_dir / MANIFEST, self.manifest)
        return self.manifest
