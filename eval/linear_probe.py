"""Linear probe of a checkpoint's frozen encoder.

    python -m eval.linear_probe --checkpoint runs/X/checkpoint.pt --data fashion-mnist|IMAGE_FOLDER

Prints progress on stderr and one JSON line on stdout, with ``test_accuracy`` last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from jepa.checkpoint import CheckpointError
from jepa.evaluation import pooled, probe_datasets, probe_features
from jepa.pretrained import encoder_from_checkpoint
from jepa.train import resolve_precision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.linear_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a jepa training checkpoint (runs/*/checkpoint.pt)")
    parser.add_argument("--data", default=None,
                        help="fashion-mnist, an image folder with train/ and val/ (or test/) class folders, moving-digits, "
                             "or a folder with train/ and val/ shard folders (video checkpoints); default: the run's data")
    parser.add_argument("--encoder", choices=["target", "context"], default="target")
    parser.add_argument("--train-size", type=int, default=None, help="probe-train images (default: the run's probe.train_size)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        cfg, encoder = encoder_from_checkpoint(args.checkpoint, args.encoder)
    except CheckpointError as err:
        parser.exit(2, f"error: {err}\n")
    if args.data is not None:
        cfg.data.source = args.data
    if args.train_size is not None:
        cfg.probe.train_size = args.train_size
    if args.epochs is not None:
        cfg.probe.epochs = args.epochs
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"probing the {args.encoder} encoder of {args.checkpoint} on {cfg.data.source}", file=sys.stderr)
    try:
        train_set, test_set = probe_datasets(cfg)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    result = probe_features(
        {"encoder": pooled(encoder.to(device))}, train_set, test_set, batch_size=cfg.probe.batch_size,
        device=device, epochs=cfg.probe.epochs, seed=cfg.seed,
        autocast_dtype=resolve_precision(args.precision, device),
    )["encoder"]
    record = {
        "checkpoint": args.checkpoint, "encoder": args.encoder, "data": cfg.data.source, "features": "avg-pooled tokens",
        **{k: v for k, v in result.items() if k != "test_accuracy"},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "test_accuracy": result["test_accuracy"],
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
