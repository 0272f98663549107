"""Weighted kNN (cosine) accuracy of a checkpoint's frozen encoder, with features cached for sweeps.

    python -m eval.knn --checkpoint runs/X/checkpoint.pt --k 20 200 [--random-init]

Prints progress on stderr and one JSON line on stdout, with ``top1`` of the first k last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


from jepa.checkpoint import CheckpointError
from jepa.evaluation import pooled
from jepa.frozen import add_frozen_args, load_frozen, split_features
from jepa.knn import knn_accuracy


POOLING = "avg-pooled tokens"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.knn", description=__doc__.splitlines()[0])
    add_frozen_args(parser)
    parser.add_argument("--k", type=int, nargs="+", default=[20], help="neighbour counts; the first is the headline")
    parser.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(cosine / temperature)")
    args = parser.parse_args(argv)
    if min(args.k) < 1:
        parser.error(f"--k values must be >= 1, got {args.k}")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}")

    start = time.perf_counter()
    try:
        frozen = load_frozen(args)
        (train_x, train_y), (test_x, test_y), cache = split_features(frozen, pooled(frozen.encoder), pooling=POOLING)
        results = {
            str(k): knn_accuracy(train_x.to(frozen.device), train_y, test_x.to(frozen.device), test_y, k=k,
                                 temperature=args.temperature)
            for k in args.k
        }
    except (CheckpointError, FileNotFoundError, ValueError) as err:  # bad checkpoint, missing/unlabelled data, k > N
        parser.exit(2, f"error: {err}\n")
    for k, acc in results.items():
        print(f"k={k}: top-1 {acc['top1']:.4f}, top-5 {acc['top5']:.4f}", file=sys.stderr)
    record = {
        "checkpoint": args.checkpoint, "encoder": args.encoder,
        "weights": "random-init" if args.random_init else "trained",
        "data": frozen.cfg.data.source, "protocol": "knn cosine", "features": POOLING, "k": results,
        "temperature": args.temperature, "feature_dim": train_x.shape[1], "train_size": len(train_x),
        "test_size": len(test_x), "cache": cache,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "top1": results[str(args.k[0])]["top1"],
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
