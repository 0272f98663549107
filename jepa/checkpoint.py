"""Checkpoints: one file written atomically, read without arbitrary unpickling."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "jepa"


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for the model at hand."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the previous checkpoint or the new one,
    never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers, nothing executable.

    ``mmap`` maps tensors from the file instead of reading them all (zip-format files), so
    taking one encoder out of a large training checkpoint does not load its optimizer state.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as err:  # noqa: BLE001 - torch raises several types for unreadable files
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "files that need arbitrary unpickling are refused"
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a checkpoint dictionary")
    return state


def load_matching(module: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Load ``weights`` into ``module`` exactly, naming every missing, unexpected or mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(weights))
        if weights[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        details = "; ".join(
            part
            for part in (
                f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "",
                f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}" if unexpected else "",
                f"shape mismatches {shapes[:5]}{'...' if len(shapes) > 5 else ''}" if shapes else "",
            )
            if part
        )
        raise CheckpointError(f"{what} does not match the model built from the config: {details}")
    module.load_state_dict(weights)
