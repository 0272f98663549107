"""Fashion-MNIST from its IDX files: the Debian package, a configured root, or torchvision's download."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = (0.2860,), (0.3530,)


class DataNotFoundError(FileNotFoundError):
    """No usable copy of a dataset was found; the message says where we looked and how to get one."""


def _debian_dirs() -> list[Path]:
    """Folders the ``dataset-fashion-mnist`` package installed files into, as dpkg reports them."""
    try:
        out = subprocess.run(
            ["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({Path(line).parent for line in out.splitlines() if line.endswith("-ubyte.gz")})


def _has_files(folder: Path) -> bool:
    return all(_find(folder, name) is not None for pair in FILES.values() for name in pair)


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name, folder / "FashionMNIST" / "raw" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(root: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """The folder holding the four IDX files, looked for in ``root``, $JEPA_FASHION_MNIST, the Debian package, then downloaded."""
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root))
    if os.environ.get("JEPA_FASHION_MNIST"):
        candidates.append(Path(os.environ["JEPA_FASHION_MNIST"]))
    candidates += [*_debian_dirs(), DEBIAN_DIR]
    for folder in candidates:
        if _has_files(folder):
            return folder
    cache = Path(root) if root is not None else Path.home() / ".cache" / "jepa" / "fashion-mnist"
    if download:
        try:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(str(cache), train=True, download=True)
            FashionMNIST(str(cache), train=False, download=True)
            if _has_files(cache):
                return cache
        except Exception as err:  # noqa: BLE001 - any download failure ends in the same advice
            reason = f"download into {cache} failed ({type(err).__name__}: {err})"
        else:
            reason = f"download into {cache} gave no IDX files"
    else:
        reason = "download disabled"
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise DataNotFoundError(
        f"Fashion-MNIST not found. Looked in: {looked}; {reason}. "
        "Install it with `apt-get install dataset-fashion-mnist`, set data.root=DIR to a folder with "
        "the four *-ubyte(.gz) files, or run once with network access so torchvision can download it."
    )


def _read_idx(path: Path, offset: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N, 1, 28, 28], labels int64 [N]) for split 'train' or 'test'."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_fashion_mnist(root)
    image_name, label_name = FILES[split]
    images = _read_idx(_find(folder, image_name), 16).reshape(-1, 1, 28, 28)
    labels = _read_idx(_find(folder, label_name), 8).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in the {split} split")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)
