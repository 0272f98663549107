"""Frozen features cached on disk, so a sweep over k, temperatures or probes encodes each split once.

A cache file holds ``x`` (float32 [N, F]) and ``y`` (int64 [N]) as safetensors, with the JSON fingerprint
of everything that determines them in the file's metadata; it is reused only when that fingerprint equals
the requested one, so a retrained checkpoint, another split or another pooling never serves stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from jepa.evaluation import extract

FORMAT_VERSION = 1  # bump when the cache layout or the meaning of a fingerprint field changes
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_HASH_CHUNK = 1 << 20
_hashes: dict[tuple[str, int, int], str] = {}


def checkpoint_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes, streamed; memoised per (path, size, mtime) since checkpoints are large."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def feature_fingerprint(
    *,
    checkpoint: str | os.PathLike,
    weights: Literal["target", "context", "random-init"],
    pooling: str,
    source: str,
    split: str,
    subset_size: int | None,
    img_size: int,
    seed: int,
) -> dict[str, Any]:
    """Everything that determines a split's features; ``seed`` picks the train subset (and random-init weights)."""
    if weights not in ("target", "context", "random-init"):
        raise ValueError(f"weights must be 'target', 'context' or 'random-init', got {weights!r}")
    if subset_size is not None and subset_size < 1:
        raise ValueError(f"subset_size must be >= 1 or None, got {subset_size!r}")
    return {
        "format": FORMAT_VERSION, "checkpoint_sha256": checkpoint_fingerprint(checkpoint), "weights": weights,
        "pooling": pooling, "source": source, "split": split, "subset_size": subset_size, "img_size": img_size,
        "seed": seed,
    }


def cache_path(fn_name: str, *, cache_dir: str | os.PathLike) -> Path:
    """Where ``fn_name``'s features live; the name must be a plain file name (no separators)."""
    if not _NAME.fullmatch(fn_name):
        raise ValueError(f"fn_name must be letters, digits, '.', '_' or '-' (a file name), got {fn_name!r}")
    return Path(cache_dir) / f"{fn_name}.safetensors"


def _stored(fingerprint: dict[str, Any], autocast_dtype: torch.dtype | None) -> str:
    # autocast changes the numbers, so it is part of what the cache must match
    return json.dumps({**fingerprint, "autocast": str(autocast_dtype)}, sort_keys=True)


def _read_fingerprint(path: Path) -> str | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except (OSError, SafetensorError):
        return None


def cache_hit(
    fn_name: str, *, cache_dir: str | os.PathLike, fingerprint: dict[str, Any], autocast_dtype: torch.dtype | None = None
) -> bool:
    """Whether :func:`cached_features` would reuse the file rather than encode (only its metadata is read)."""
    return _read_fingerprint(cache_path(fn_name, cache_dir=cache_dir)) == _stored(fingerprint, autocast_dtype)


def cached_features(
    fn_name: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: torch.utils.data.Dataset,
    *,
    cache_dir: str | os.PathLike,
    fingerprint: dict[str, Any],
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``extract(fn, dataset)`` as (float32 [N, F], int64 [N]) on CPU, read from the cache when its fingerprint matches."""
    path = cache_path(fn_name, cache_dir=cache_dir)
    wanted = _stored(fingerprint, autocast_dtype)  # also checks the fingerprint is JSON
    found = _read_fingerprint(path)
    if found == wanted:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("x"), f.get_tensor("y")
    reason = "no cache" if found is None else "fingerprint changed"
    print(f"features {fn_name}: {reason}, encoding -> {path}", file=sys.stderr)
    x, y = extract(fn, dataset, batch_size=batch_size, device=device, autocast_dtype=autocast_dtype)
    x, y = x.float().contiguous(), y.long().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    save_file({"x": x, "y": y}, str(partial), metadata={"fingerprint": wanted})
    os.replace(partial, path)  # atomic: an interrupted run never leaves a half-written cache behind
    return x, y
