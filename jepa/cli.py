"""Command line: ``jepa train [--config PATH] [key=value ...]`` and ``jepa export SOURCE OUT_DIR``."""

from __future__ import annotations

import argparse
import json
import sys

from jepa.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa", description="JEPA self-supervised pretraining")
    sub = parser.add_subparsers(dest="command", required=True)
    train_p = sub.add_parser("train", help="pretrain an encoder (no arguments: the embedded Fashion-MNIST default)")
    train_p.add_argument("--config", help="YAML config; omitted: the embedded default (configs/ijepa/default.yaml)")
    train_p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.steps=2000 run_dir=runs/a")
    export_p = sub.add_parser("export", help="write an encoder as model.safetensors + config.json (jepa.load_encoder reads it)")
    export_p.add_argument("source", help="our checkpoint, an official I-JEPA / V-JEPA / V-JEPA 2 file or a timm state dict")
    export_p.add_argument("out_dir")
    export_p.add_argument("--which", choices=["target", "context"], default="target")
    export_p.add_argument("--arch", default=None, help="settles the head count when the width cannot (1408: 16 or 22)")
    export_p.add_argument("--img-size", type=int, default=None)
    export_p.add_argument("--num-frames", type=int, default=None)
    export_p.add_argument("--rope", action=argparse.BooleanOptionalAction, default=None,
                          help="--rope: V-JEPA 2 rotary positions (a pos_embed in the file is ignored); --no-rope: "
                               "an absolute position table; default: inferred (rotary when there is no pos_embed)")
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(parser, args)

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


def _export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from jepa.export import save_encoder
    from jepa.hub import load_encoder

    try:
        backbone = load_encoder(args.source, which=args.which, arch=args.arch, img_size=args.img_size,
                                num_frames=args.num_frames, rope=args.rope)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"jepa: error: {err}\n")
    folder = save_encoder(backbone, args.out_dir)
    print(json.dumps({"source": args.source, "weights": backbone.report.weights, "format": backbone.report.format,
                      "out_dir": str(folder), "spec": asdict(backbone.spec)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
