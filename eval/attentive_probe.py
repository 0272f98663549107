"""Attentive probe of a checkpoint's frozen encoder (V-JEPA protocol; ``--depth N`` for V-JEPA 2's).

    python -m eval.attentive_probe --checkpoint runs/X/checkpoint.pt [--data fashion-mnist] [--depth 0|N]

Prints progress on stderr and one JSON line on stdout, with ``test_accuracy`` last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


from jepa.attentive import DEFAULT_LRS, DEFAULT_WEIGHT_DECAYS, all_tokens, train_attentive_probe
from jepa.checkpoint import CheckpointError
from jepa.frozen import add_frozen_args, load_frozen, split_features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.attentive_probe", description=__doc__.splitlines()[0])
    add_frozen_args(parser)
    parser.add_argument("--depth", type=int, default=0, help="self-attention blocks before the query (0: V-JEPA)")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    if args.depth < 0 or args.epochs < 1:
        parser.error("--depth must be >= 0 and --epochs >= 1")

    start = time.perf_counter()
    try:
        frozen = load_frozen(args)
        # all tokens, not pooled: too large to be worth caching on disk (20k x 49 x 192 floats)
        (train_x, train_y), (test_x, test_y), _ = split_features(frozen, all_tokens(frozen.encoder),
                                                                 pooling="all tokens", cache=False)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    # float16 storage halves the token bank; the probe trains in float32.
    train_x, test_x = train_x.to(frozen.device).half(), test_x.to(frozen.device).half()
    train_y, test_y = train_y.to(frozen.device), test_y.to(frozen.device)
    result = train_attentive_probe(train_x, train_y, test_x, test_y, num_heads=frozen.encoder.num_heads,
                                   depth=args.depth, epochs=args.epochs, seed=frozen.cfg.seed)
    protocol = "attentive (V-JEPA)" if args.depth == 0 else f"attentive + {args.depth} blocks (V-JEPA 2)"
    record = {
        "checkpoint": args.checkpoint, "encoder": frozen.weights, "data": frozen.cfg.data.source, "protocol": protocol,
        "budget": {"epochs": args.epochs, "train_size": len(train_x), "test_size": len(test_x),
                   "grid": {"lr": list(DEFAULT_LRS), "weight_decay": list(DEFAULT_WEIGHT_DECAYS)}},
        "tokens": list(train_x.shape[1:]),
        "lr": result.lr, "weight_decay": result.weight_decay, "val_accuracy": result.val_accuracy,
        "train_accuracy": result.train_accuracy, "grid": result.grid,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "test_accuracy": result.test_accuracy,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
