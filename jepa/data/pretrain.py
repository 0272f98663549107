"""The pretraining input pipeline: labelled images -> augmented views -> batches with masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from dataclasses import dataclass, field

import torch
from torchvision.transforms import v2

from jepa.data.sampling import SampleKey, derive_seed
from jepa.masks import MaskGenerator, MaskSet


def train_transform(
    *, img_size: int, crop_scale: tuple[float, float], crop_ratio: tuple[float, float], hflip: bool,
    mean: Sequence[float], std: Sequence[float],
) -> v2.Compose:
    """I-JEPA's augmentation: random resized crop (+ flip), then float normalisation."""
    steps: list[v2.Transform] = [v2.RandomResizedCrop(img_size, scale=crop_scale, ratio=crop_ratio, antialias=True)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(steps)


def eval_transform(*, img_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize + centre crop + normalisation, for feature extraction."""
    return v2.Compose([
        v2.Resize(img_size, antialias=True), v2.CenterCrop(img_size),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
    ])


class SeededViews(torch.utils.data.Dataset):
    """Applies ``transform`` to ``base[key.index]`` under an RNG seeded from the sample's stream position.

    ``base`` returns (uint8 image or None when unreadable, label).
    """

    def __init__(self, base: torch.utils.data.Dataset, transform: Callable, *, seed: int) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: SampleKey) -> tuple[torch.Tensor | None, int, int]:
        """(view or None, label, stream position): the view depends only on the seed and the position."""
        image, label = self.base[key.index]
        if image is None:
            return None, label, key.position
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, 2, key.position))
            return self.transform(image), label, key.position


@dataclass
class MaskCollator:
    """Stacks a micro-batch, drops unreadable samples (counted), and gives each sample its row of the step's masks.

    The masks of optimizer step ``s`` are drawn once for the whole global batch (stream positions
    ``s * global_batch ...``) from a seed of ``s``; a micro-batch takes the rows of its own positions.
    Sample ``i`` of a global batch therefore gets the same masks (and the same token counts) whether one
    process, several ranks or several accumulation steps handle it, which is what makes a 2-rank or
    accumulated step equal to a single-process step of the same global batch.
    """

    mask_generator: MaskGenerator
    seed: int
    global_batch: int
    _cache: tuple[int, list[MaskSet]] | None = field(default=None, init=False, repr=False)

    def _step_masks(self, step: int) -> list[MaskSet]:
        """The global batch's masks of ``step``, kept for the step's next micro-batch (~25 ms for 2048 on 14x14)."""
        if self._cache is None or self._cache[0] != step:
            g = torch.Generator().manual_seed(derive_seed(self.seed, 3, step))
            self._cache = (step, self.mask_generator(self.global_batch, g))
        return self._cache[1]

    def __call__(self, samples: list[tuple[torch.Tensor | None, int, int]]) -> dict[str, Any]:
        step = samples[0][2] // self.global_batch
        if any(s[2] // self.global_batch != step for s in samples):
            raise ValueError(f"a micro-batch straddles optimizer steps (global batch {self.global_batch})")
        good = [s for s in samples if s[0] is not None]
        bad = len(samples) - len(good)
        if not good:
            raise RuntimeError(f"every sample of a micro-batch of step {step} was unreadable")
        rows = torch.tensor([s[2] - step * self.global_batch for s in good])
        masks = [MaskSet(*(idx[rows] for idx in mask_set)) for mask_set in self._step_masks(step)]
        return {
            "inputs": torch.stack([s[0] for s in good]),
            "labels": torch.tensor([s[1] for s in good], dtype=torch.long),
            "masks": masks,
            "skipped": torch.tensor(bad),
        }


class LabelledTensors(torch.utils.data.Dataset):
    """In-memory uint8 images [N, C, H, W] with labels, as (image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])
