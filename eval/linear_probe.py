"""Linear probe of a checkpoint's frozen encoder (average-pooled tokens, features cached).

    python -m eval.linear_probe --checkpoint runs/X/checkpoint.pt --data fashion-mnist|IMAGE_FOLDER [--random-init]

Prints progress on stderr and one JSON line on stdout, with ``test_accuracy`` last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from jepa.checkpoint import CheckpointError
from jepa.evaluation import pooled
from jepa.frozen import add_frozen_args, load_frozen, split_features
from jepa.probe import train_linear_probe

POOLING = "avg-pooled tokens"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.linear_probe", description=__doc__.splitlines()[0])
    add_frozen_args(parser)
    parser.add_argument("--epochs", type=int, default=None, help="default: the run's probe.epochs")
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")

    start = time.perf_counter()
    try:
        frozen = load_frozen(args)
        (train_x, train_y), (test_x, test_y), cache = split_features(frozen, pooled(frozen.encoder), pooling=POOLING)
        result = train_linear_probe(train_x, train_y, test_x, test_y, epochs=args.epochs or frozen.cfg.probe.epochs,
                                    seed=frozen.cfg.seed)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    record = {
        "checkpoint": args.checkpoint, "encoder": frozen.weights, "data": frozen.cfg.data.source,
        "protocol": "linear (multinomial logistic regression, lr x wd grid selected on a train-carved val split)",
        "features": POOLING, "feature_dim": train_x.shape[1],
        "budget": {"epochs": result.epochs, "train_size": len(train_x), "test_size": len(test_x)},
        "train_size": len(train_x), "test_size": len(test_x),
        "lr": result.lr, "weight_decay": result.weight_decay, "val_accuracy": result.val_accuracy,
        "train_accuracy": result.train_accuracy, "grid": result.grid, "cache": cache,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "test_accuracy": result.test_accuracy,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
