"""A frozen pretrained encoder under a small classifier head: the downstream use of ``jepa.load_encoder``.

    python examples/frozen_classifier.py --encoder CHECKPOINT [--train-size 5000] [--steps 500]

CHECKPOINT is anything ``load_encoder`` reads: a jepa run's checkpoint.pt, an export folder,
an official I-JEPA / V-JEPA / V-JEPA 2 file or a timm ViT state dict. Only the head
(LayerNorm + Linear on average-pooled tokens) trains, on Fashion-MNIST images brought to
the encoder's size, channels and normalisation. Prints one JSON line with the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

from jepa import load_encoder
from jepa.backbone import Backbone
from jepa.data.fashion_mnist import load_fashion_mnist


class FrozenClassifier(nn.Module):
    """Backbone (frozen, always in eval mode) -> pooled features -> LayerNorm -> Linear."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.head = nn.Sequential(nn.LayerNorm(backbone.embed_dim), nn.Linear(backbone.embed_dim, num_classes))

    def train(self, mode: bool = True) -> FrozenClassifier:
        super().train(mode)
        self.backbone.eval()  # no dropout / stochastic depth in the frozen part
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.backbone(images, pool="avg")
        return self.head(features)


def to_encoder_input(images: torch.Tensor, backbone: Backbone) -> torch.Tensor:
    """uint8 grey images [N, 1, H, W] -> float [N, C, S, S] at the encoder's size, channels and normalisation."""
    x = images.float().div(255)
    x = F.interpolate(x, size=(backbone.img_size, backbone.img_size), mode="bilinear", align_corners=False)
    x = x.expand(-1, len(backbone.mean), -1, -1)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (backbone.mean, backbone.std))
    return (x - mean) / std


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", required=True, help="checkpoint, export folder or state dict")
    parser.add_argument("--which", choices=["target", "context"], default="target")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    model = FrozenClassifier(load_encoder(args.encoder, which=args.which), num_classes=10)
    train_images, train_labels = load_fashion_mnist("train")
    test_images, test_labels = load_fashion_mnist("test")
    pick = torch.randperm(len(train_images))[: args.train_size]
    train_x, train_y = to_encoder_input(train_images[pick], model.backbone), train_labels[pick]
    test_x, test_y = to_encoder_input(test_images[: args.test_size], model.backbone), test_labels[: args.test_size]

    optimizer = torch.optim.AdamW(model.head.parameters(), lr=args.lr)
    model.train()
    for step in range(args.steps):
        batch = torch.randint(len(train_x), (args.batch_size,))
        loss = F.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}/{args.steps} loss {loss.item():.3f}", file=sys.stderr)

    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(dim=1) for chunk in test_x.split(256)])
    result = {"encoder": args.encoder, "weights": model.backbone.report.weights, "train_size": len(train_x),
              "steps": args.steps, "test_size": len(test_x),
              "test_accuracy": (predictions == test_y).float().mean().item()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
