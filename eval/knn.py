"""Weighted kNN (cosine) accuracy of a checkpoint's frozen encoder, with features cached for sweeps.

    python -m eval.knn --checkpoint runs/X/checkpoint.pt --k 20 200 [--random-init]

Prints progress on stderr and one JSON line on stdout, with ``top1`` of the first k last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from jepa.build import build_encoder
from jepa.checkpoint import CheckpointError
from jepa.evaluation import pooled, probe_datasets
from jepa.features import cache_hit, cached_features, feature_fingerprint
from jepa.knn import knn_accuracy
from jepa.pretrained import encoder_from_checkpoint
from jepa.train import resolve_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.knn", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a jepa training checkpoint (runs/*/checkpoint.pt)")
    parser.add_argument("--data", default=None,
                        help="fashion-mnist, an image folder with train/ and val/ (or test/) class folders, or video "
                             "shards (see eval.linear_probe); default: the run's data")
    parser.add_argument("--encoder", choices=["target", "context"], default="target")
    parser.add_argument("--k", type=int, nargs="+", default=[20], help="neighbour counts; the first is the headline")
    parser.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(cosine / temperature)")
    parser.add_argument("--train-size", type=int, default=None, help="train images (default: the run's probe.train_size)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: <checkpoint folder>/features)")
    parser.add_argument("--random-init", action="store_true",
                        help="baseline: the same architecture at random init (seeded by the run's seed)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args(argv)
    if min(args.k) < 1:
        parser.error(f"--k values must be >= 1, got {args.k}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")
    if args.train_size is not None and args.train_size < 1:
        parser.error(f"--train-size must be >= 1, got {args.train_size}")

    start = time.perf_counter()
    try:
        cfg, encoder = encoder_from_checkpoint(args.checkpoint, args.encoder)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    weights = args.encoder
    if args.random_init:
        torch.manual_seed(cfg.seed)
        encoder, weights = build_encoder(cfg).eval().requires_grad_(False), "random-init"
    if args.data is not None:
        cfg.data.source = args.data
    if args.train_size is not None:
        cfg.probe.train_size = args.train_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast_dtype = resolve_precision(args.precision, device)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(args.checkpoint).parent / "features"
    print(f"kNN on the {weights} encoder of {args.checkpoint} on {cfg.data.source}", file=sys.stderr)

    fn, features, hits = pooled(encoder.to(device)), {}, {}
    try:
        train_set, test_set = probe_datasets(cfg)
        for split, dataset, size in (("train", train_set, cfg.probe.train_size), ("test", test_set, None)):
            fingerprint = feature_fingerprint(
                checkpoint=args.checkpoint, weights=weights, pooling="avg-pooled tokens", source=cfg.data.source,
                split=split, subset_size=size, img_size=cfg.data.img_size, seed=cfg.seed,
            )
            name = f"{weights}-{split}"
            hits[split] = cache_hit(name, cache_dir=cache_dir, fingerprint=fingerprint, autocast_dtype=autocast_dtype)
            features[split] = cached_features(
                name, fn, dataset, cache_dir=cache_dir, fingerprint=fingerprint, batch_size=cfg.probe.batch_size,
                device=device, autocast_dtype=autocast_dtype,
            )
        (train_x, train_y), (test_x, test_y) = features["train"], features["test"]
        results = {
            str(k): knn_accuracy(train_x.to(device), train_y, test_x.to(device), test_y, k=k, temperature=args.temperature)
            for k in args.k
        }
    except (FileNotFoundError, ValueError) as err:  # missing data, unlabelled data, k above the train size
        parser.exit(2, f"error: {err}\n")
    for k, acc in results.items():
        print(f"k={k}: top-1 {acc['top1']:.4f}, top-5 {acc['top5']:.4f}", file=sys.stderr)
    record = {
        "checkpoint": args.checkpoint, "encoder": args.encoder, "weights": "random-init" if args.random_init else "trained",
        "data": cfg.data.source, "protocol": "knn cosine", "features": "avg-pooled tokens", "k": results,
        "temperature": args.temperature, "feature_dim": train_x.shape[1], "train_size": len(train_x),
        "test_size": len(test_x), "cache": {split: "hit" if hit else "miss" for split, hit in hits.items()},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "top1": results[str(args.k[0])]["top1"],
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
