"""Attentive probe of a checkpoint's frozen encoder (V-JEPA protocol; ``--depth N`` for V-JEPA 2's).

    python -m eval.attentive_probe --checkpoint runs/X/checkpoint.pt [--data fashion-mnist] [--depth 0|N]

Prints progress on stderr and one JSON line on stdout, with ``test_accuracy`` last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from jepa.attentive import DEFAULT_LRS, DEFAULT_WEIGHT_DECAYS, all_tokens, train_attentive_probe
from jepa.build import build_encoder
from jepa.checkpoint import CheckpointError
from jepa.evaluation import extract, probe_datasets
from jepa.pretrained import encoder_from_checkpoint
from jepa.train import resolve_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.attentive_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a jepa training checkpoint (runs/*/checkpoint.pt)")
    parser.add_argument("--data", default=None, help="as for eval.linear_probe; default: the run's data")
    parser.add_argument("--encoder", choices=["target", "context"], default="target")
    parser.add_argument("--depth", type=int, default=0, help="self-attention blocks before the query (0: V-JEPA)")
    parser.add_argument("--train-size", type=int, default=None, help="probe-train images (default: the run's probe.train_size)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--random-init", action="store_true",
                        help="baseline: the same encoder architecture at random init (seed + 1, as in training's probe summary)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args(argv)
    if args.depth < 0 or args.epochs < 1 or (args.train_size is not None and args.train_size < 1):
        parser.error("--depth must be >= 0, --epochs and --train-size >= 1")

    start = time.perf_counter()
    try:
        cfg, encoder = encoder_from_checkpoint(args.checkpoint, args.encoder)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    if args.random_init:
        torch.manual_seed(cfg.seed + 1)
        encoder = build_encoder(cfg).eval().requires_grad_(False)
    if args.data is not None:
        cfg.data.source = args.data
    if args.train_size is not None:
        cfg.probe.train_size = args.train_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"attentive probe of the {'random-init' if args.random_init else args.encoder} encoder of "
          f"{args.checkpoint} on {cfg.data.source}", file=sys.stderr)
    try:
        train_set, test_set = probe_datasets(cfg)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    kwargs = dict(batch_size=cfg.probe.batch_size, device=device,
                  autocast_dtype=resolve_precision(args.precision, device))
    features = all_tokens(encoder.to(device))
    # float16 storage halves the token bank (20k x 49 x 192 is 376 MB); the probe trains in float32.
    train_x, train_y = (t.to(device) for t in extract(features, train_set, **kwargs))
    test_x, test_y = (t.to(device) for t in extract(features, test_set, **kwargs))
    train_x, test_x = train_x.half(), test_x.half()
    result = train_attentive_probe(train_x, train_y, test_x, test_y, num_heads=encoder.blocks[0].attn.num_heads,
                                   depth=args.depth, epochs=args.epochs, seed=cfg.seed)
    protocol = "attentive (V-JEPA)" if args.depth == 0 else f"attentive + {args.depth} blocks (V-JEPA 2)"
    record = {
        "checkpoint": args.checkpoint, "encoder": "random-init" if args.random_init else args.encoder,
        "data": cfg.data.source, "protocol": protocol,
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
