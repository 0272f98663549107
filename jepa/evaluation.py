"""Frozen-encoder scoring: pooled features -> linear probe, next to random-init and raw-pixel baselines."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jepa.build import build_image_data, is_video
from jepa.config import Config
from jepa.data.pretrain import eval_transform
from jepa.data.video_data import LabelledClips
from jepa.probe import train_linear_probe

log = logging.getLogger(__name__)
RAW_PIXEL_SIDE = 32  # raw-pixel baseline images are pooled down to at most this side


class Transformed(torch.utils.data.Dataset):
    """(image, label) with ``transform`` applied; unreadable images come back as None."""

    def __init__(self, base: torch.utils.data.Dataset, transform: Callable, indices: torch.Tensor | None = None) -> None:
        self.base = base
        self.transform = transform
        self.indices = indices

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int]:
        image, label = self.base[i if self.indices is None else int(self.indices[i])]
        return (None if image is None else self.transform(image)), label


def _collate_readable(samples: list[tuple[torch.Tensor | None, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    good = [s for s in samples if s[0] is not None]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.stack([s[0] for s in good]), torch.tensor([s[1] for s in good])


@torch.no_grad()
def extract(
    fn: Callable[[torch.Tensor], torch.Tensor],
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``fn`` to every readable image; returns (float32 features [N, F] on CPU, labels [N])."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate_readable
    )
    feats, labels = [], []
    for x, y in loader:
        if len(x) == 0:
            continue
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            feats.append(fn(x.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    if not feats:
        raise ValueError("no readable images to extract features from")
    return torch.cat(feats), torch.cat(labels)


def pooled(encoder: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Average-pooled final tokens, the I-JEPA probe features."""
    return lambda x: encoder(x).mean(dim=1)


def per_frame_pooled(encoder: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Video baseline without temporal order: each frame encoded as a static clip, pooled, then averaged over frames."""

    def features(clip: torch.Tensor) -> torch.Tensor:
        frames = clip.shape[2]
        per_frame = [encoder(clip[:, :, t : t + 1].expand(-1, -1, frames, -1, -1)).mean(dim=1) for t in range(frames)]
        return torch.stack(per_frame).mean(dim=0)

    return features


def raw_pixels(x: torch.Tensor) -> torch.Tensor:
    """Flattened normalised pixels, pooled down to RAW_PIXEL_SIDE so large images stay tractable."""
    if x.shape[-1] > RAW_PIXEL_SIDE:
        x = F.adaptive_avg_pool2d(x, RAW_PIXEL_SIDE)
    return x.flatten(1)


def probe_features(
    features: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    train_set: torch.utils.data.Dataset,
    test_set: torch.utils.data.Dataset,
    *,
    batch_size: int,
    device: torch.device,
    epochs: int,
    seed: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, dict[str, Any]]:
    """For each named feature function: extract train/test features and fit the linear probe."""
    results = {}
    for name, fn in features.items():
        start = time.perf_counter()
        kwargs = dict(batch_size=batch_size, device=device, autocast_dtype=autocast_dtype if fn is not raw_pixels else None)
        train_x, train_y = extract(fn, train_set, **kwargs)
        test_x, test_y = extract(fn, test_set, **kwargs)
        result = train_linear_probe(train_x, train_y, test_x, test_y, epochs=epochs, seed=seed)
        results[name] = {
            "test_accuracy": result.test_accuracy,
            "val_accuracy": result.val_accuracy,
            "lr": result.lr,
            "weight_decay": result.weight_decay,
            "feature_dim": train_x.shape[1],
            "train_size": len(train_x),
            "test_size": len(test_x),
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.info("probe %s: test accuracy %.4f", name, result.test_accuracy)
    return results


def probe_datasets(cfg: Config) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Probe train set (``probe.train_size`` train images or clips) and the full test split."""
    if is_video(cfg):
        return LabelledClips(cfg, "train", cfg.probe.train_size), LabelledClips(cfg, "test")
    train = build_image_data(cfg, "train")
    test = build_image_data(cfg, "test")
    transform = eval_transform(img_size=cfg.data.img_size, mean=train.mean, std=train.std)
    n = len(train.dataset)
    size = n if cfg.probe.train_size is None else min(cfg.probe.train_size, n)
    subset = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))[:size]
    return Transformed(train.dataset, transform, subset), Transformed(test.dataset, transform)
