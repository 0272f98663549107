"""What every frozen-encoder evaluation program shares: which encoder, on which data, with cached features."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from jepa.backbone import Backbone, build_encoder_from_spec
from jepa.build import build_encoder
from jepa.checkpoint import FORMAT, CheckpointError, load_checkpoint
from jepa.config import Config
from jepa.evaluation import extract, probe_datasets
from jepa.features import cache_hit, cached_features, feature_fingerprint
from jepa.hub import load_encoder
from jepa.pretrained import encoder_from_state
from jepa.precision import resolve_precision

Features = tuple[torch.Tensor, torch.Tensor]


def add_frozen_args(parser: argparse.ArgumentParser) -> None:
    """The options every probe program takes."""
    parser.add_argument("--checkpoint", required=True,
                        help="a jepa training checkpoint (runs/*/checkpoint.pt), or anything jepa.load_encoder reads "
                             "(an export, an official I-JEPA / V-JEPA / V-JEPA 2 file, a timm state dict; needs --data)")
    parser.add_argument("--data", default=None,
                        help="fashion-mnist, an image folder with train/ and val/ (or test/) class folders, moving-digits, "
                             "or a folder with train/ and val/ shard folders (video checkpoints); default: the run's data")
    parser.add_argument("--encoder", choices=["target", "context"], default="target")
    parser.add_argument("--rope", action=argparse.BooleanOptionalAction, default=None,
                        help="files without a config: --rope loads V-JEPA 2 rotary positions (a pos_embed in the file "
                             "is ignored), --no-rope an absolute table; default: inferred, as jepa.load_encoder does")
    parser.add_argument("--train-size", type=int, default=None, help="probe-train items (default: the run's probe.train_size)")
    parser.add_argument("--random-init", action="store_true",
                        help="baseline: the same architecture at random init (seed + 1, as the end-of-run probe)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: <checkpoint folder>/features)")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")


@dataclass
class Frozen:
    """A frozen encoder ready to probe, with the run config its data settings come from."""

    checkpoint: str
    cfg: Config
    encoder: nn.Module
    weights: str  # "target", "context" or "random-init"
    device: torch.device
    autocast_dtype: torch.dtype | None
    cache_dir: Path
    rope: bool | None = None  # the --rope/--no-rope choice: part of the feature-cache fingerprint when given


class Tokens(nn.Module):
    """A backbone seen as the probes see our encoders: ``forward(x)`` gives tokens, ``num_heads`` is there."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_heads = backbone.encoder.num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)


def _foreign_encoder(args: argparse.Namespace) -> tuple[Config, nn.Module]:
    """Official / exported / timm weights through load_encoder, with a config that feeds the probe data to them."""
    if args.data is None:
        raise CheckpointError(f"{args.checkpoint} is not a jepa training checkpoint, so it has no data settings: "
                              "give --data")
    backbone = load_encoder(args.checkpoint, which=args.encoder, rope=args.rope)
    spec = backbone.spec
    cfg = Config()
    cfg.data.img_size, cfg.encoder.in_chans, cfg.encoder.patch_size = spec.img_size, spec.in_chans, spec.patch_size
    if spec.is_video:
        cfg.video.num_frames, cfg.video.tubelet_size = spec.num_frames, spec.tubelet_size
    if args.random_init:
        torch.manual_seed(cfg.seed + 1)
        backbone = Backbone(build_encoder_from_spec(spec), spec, backbone.report).eval().requires_grad_(False)
    return cfg, Tokens(backbone)


def load_frozen(args: argparse.Namespace) -> Frozen:
    """The encoder the arguments name (raises CheckpointError / ValueError with a clear message)."""
    if args.train_size is not None and args.train_size < 1:
        raise ValueError(f"--train-size must be >= 1, got {args.train_size}")
    path = Path(args.checkpoint)
    state = {} if path.is_dir() or path.suffix == ".safetensors" else load_checkpoint(path, mmap=True)
    if state.get("format") == FORMAT:
        if args.rope:
            raise ValueError(f"--rope: {args.checkpoint} is a jepa training checkpoint, whose encoder uses a position "
                             "table (its config says so); drop --rope")
        cfg, encoder = encoder_from_state(state, args.encoder, args.checkpoint)
        if args.random_init:
            torch.manual_seed(cfg.seed + 1)
            encoder = build_encoder(cfg).eval().requires_grad_(False)
    else:
        cfg, encoder = _foreign_encoder(args)
    weights = "random-init" if args.random_init else args.encoder
    if args.data is not None:
        cfg.data.source = args.data
    if args.train_size is not None:
        cfg.probe.train_size = args.train_size
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(args.checkpoint).parent / "features"
    print(f"probing the {weights} encoder of {args.checkpoint} on {cfg.data.source}", file=sys.stderr)
    return Frozen(args.checkpoint, cfg, encoder.to(device), weights, device, resolve_precision(args.precision, device),
                  cache_dir, args.rope)


def split_features(
    frozen: Frozen, fn: Callable[[torch.Tensor], torch.Tensor], *, pooling: str, cache: bool = True
) -> tuple[Features, Features, dict[str, str]]:
    """(train, test) features of ``fn`` over the probe splits, from the cache when its fingerprint matches."""
    cfg = frozen.cfg
    train_set, test_set = probe_datasets(cfg)
    kwargs = dict(batch_size=cfg.probe.batch_size, device=frozen.device, autocast_dtype=frozen.autocast_dtype)
    out, hits = {}, {}
    for split, dataset, size in (("train", train_set, cfg.probe.train_size), ("test", test_set, None)):
        if not cache:
            out[split], hits[split] = extract(fn, dataset, **kwargs), "off"
            continue
        fingerprint = feature_fingerprint(
            checkpoint=frozen.checkpoint, weights=frozen.weights, pooling=pooling, source=cfg.data.source,
            split=split, subset_size=size, img_size=cfg.data.img_size, seed=cfg.seed,
        )
        if frozen.rope is not None:  # the same file read with other positions is another encoder
            fingerprint["rope"] = frozen.rope
        name = f"{frozen.weights}-{split}"  # the pooling is in the fingerprint: probes on the same features share it
        hit = cache_hit(name, cache_dir=frozen.cache_dir, fingerprint=fingerprint, autocast_dtype=frozen.autocast_dtype)
        out[split] = cached_features(name, fn, dataset, cache_dir=frozen.cache_dir, fingerprint=fingerprint, **kwargs)
        hits[split] = "hit" if hit else "miss"
    return out["train"], out["test"], hits
