"""Online monitoring during pretraining: a cheap k-NN score of the target encoder every N steps.

Collapse shows up here long before the end-of-run probe: the score falls to
chance while the loss still looks healthy. The labelled images come from the
training split only (a fixed, seeded subset split in two), never the test split.
"""

from __future__ import annotations

from itertools import islice

import torch
from torch import nn

from jepa.config import Config
from jepa.evaluation import extract, pooled, probe_datasets
from jepa.knn import knn_accuracy


class KnnMonitor:
    """k-NN top-1 of pooled frozen features: fit on ``size`` train items, scored on ``size // 2`` others."""

    def __init__(self, cfg: Config, *, device: torch.device, autocast_dtype: torch.dtype | None) -> None:
        size = cfg.probe.monitor_size
        if size < 2:
            raise ValueError(f"probe.monitor_size must be >= 2, got {size}")
        train_set, _ = probe_datasets(cfg)
        items = list(islice(iter_items(train_set), size + size // 2))
        if len(items) < 3:
            raise ValueError("the training split has too few labelled items to monitor")
        self.fit = items[:size]
        self.held_out = items[size:]
        self.batch_size = cfg.probe.batch_size
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.k = min(cfg.probe.monitor_k, len(self.fit))

    @torch.no_grad()
    def __call__(self, encoder: nn.Module) -> float:
        was_training = encoder.training
        encoder.eval()
        kwargs = dict(batch_size=self.batch_size, device=self.device, autocast_dtype=self.autocast_dtype)
        fit_x, fit_y = extract(pooled(encoder), self.fit, **kwargs)
        test_x, test_y = extract(pooled(encoder), self.held_out, **kwargs)
        encoder.train(was_training)
        return knn_accuracy(fit_x, fit_y, test_x, test_y, k=self.k, temperature=0.07)["top1"]


def iter_items(dataset: torch.utils.data.Dataset):
    """Items of a map-style or iterable dataset, in order."""
    if isinstance(dataset, torch.utils.data.IterableDataset):
        yield from dataset
    else:
        for i in range(len(dataset)):
            yield dataset[i]
