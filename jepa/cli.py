"""Command line: ``jepa train [--config PATH] [key=value ...]`` and ``jepa plan --config PATH [key=value ...]``."""

from __future__ import annotations

import argparse
import sys

from jepa.config import ConfigError, load_config, load_plan_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa", description="JEPA self-supervised pretraining")
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="pretrain an encoder (no arguments: the embedded Fashion-MNIST default)")
    train_p.add_argument("--config", help="YAML config; omitted: the embedded default (configs/ijepa/default.yaml)")
    train_p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.steps=2000 run_dir=runs/a")
    plan_p = sub.add_parser("plan", help="two-rooms planning recipe: collect, pretrain, world model, evaluate (resumable)")
    plan_p.add_argument("--config", help="YAML plan config, e.g. configs/plan/two_rooms.yaml; omitted: its defaults")
    plan_p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. run_dir=runs/p world_model.steps=500")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return _plan(parser, args)

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


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        cfg = load_plan_config(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"jepa: config error: {err}\n")
    import json

    from jepa.planning.recipe import run_recipe
    from jepa.train import TrainingStopped

    try:
        summary = run_recipe(cfg)
    except TrainingStopped as err:
        print(f"jepa: {err}", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as err:
        print(f"jepa: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
