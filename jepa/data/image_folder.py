"""ImageNet-style folders (split/class/image) read lazily, with corrupt files skipped and counted."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import functional as TF

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


class ImageFolder(torch.utils.data.Dataset):
    """``root/<class>/<image>`` as (uint8 tensor [3, H, W] or None if unreadable, class index)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise FileNotFoundError(f"{self.root} has no class sub-folders (expected {self.root}/<class>/<image>)")
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise FileNotFoundError(f"{self.root} has class folders but no images with extensions {sorted(IMAGE_EXTENSIONS)}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int]:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                return TF.pil_to_tensor(img.convert("RGB")), label
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
            return None, label


def split_folder(root: str | os.PathLike, split: str) -> Path:
    """``root/train`` for 'train'; ``root/val`` or ``root/test`` for 'test'."""
    root = Path(root)
    names = ["train"] if split == "train" else ["val", "test"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root} has no {' or '.join(n + '/' for n in names)} sub-folder")
