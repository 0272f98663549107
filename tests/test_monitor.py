import json

import torch
from torch import nn

from jepa.config import load_config
from jepa.monitor import KnnMonitor
from jepa.train import train

TINY = [
    "encoder.embed_dim=32", "encoder.depth=2", "encoder.num_heads=2", "predictor.embed_dim=16",
    "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=16", "train.precision=fp32",
    "probe.enabled=false", "wandb.mode=disabled",
]


class Pixels(nn.Module):
    """An 'encoder' whose one token is the raw image: a known-good feature."""

    def forward(self, x):
        return x.flatten(1).unsqueeze(1)


class Constant(nn.Module):
    """A collapsed encoder."""

    def forward(self, x):
        return torch.ones(len(x), 1, 8)


def test_monitor_separates_informative_from_collapsed_features():
    cfg = load_config(None, [*TINY, "probe.monitor_size=600"])
    monitor = KnnMonitor(cfg, device=torch.device("cpu"), autocast_dtype=None)
    assert len(monitor.fit) == 600 and len(monitor.held_out) == 300
    assert monitor(Pixels()) > 0.6  # k-NN on raw Fashion-MNIST pixels
    assert monitor(Constant()) < 0.25  # collapse reads as about chance (10 classes)


def test_training_logs_the_monitor_every_n_steps(tmp_path):
    train(load_config(None, [*TINY, f"run_dir={tmp_path}", "train.steps=8", "train.log_every=3",
                             "probe.monitor_every=4", "probe.monitor_size=200"]))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    monitored = [r["step"] for r in records if "monitor_knn_top1" in r]
    assert monitored == [4, 8]
    assert all(0.0 <= r["monitor_knn_top1"] <= 1.0 for r in records if "monitor_knn_top1" in r)
    assert [r["step"] for r in records] == [3, 4, 6, 8]
