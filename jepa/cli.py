"""Command line: ``jepa train [--config PATH] [key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from jepa.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa", description="JEPA self-supervised pretraining")
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="pretrain an encoder (no arguments: the embedded Fashion-MNIST default)")
    train_p.add_argument("--config", help="YAML config; omitted: the embedded default (configs/ijepa/default.yaml)")
    train_p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.steps=2000 run_dir=runs/a")
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"jepa: config error: {err}\n")

    from jepa.train import NonFiniteLoss, TrainingStopped, train

    try:
        summary = train(cfg)
    except TrainingStopped as err:
        print(f"jepa: {err}", file=sys.stderr)
        return 130
    except (NonFiniteLoss, FileNotFoundError, ValueError) as err:
        print(f"jepa: error: {err}", file=sys.stderr)
        return 1
    if summary:
        print(f"summary: {cfg.run_dir}/summary.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
