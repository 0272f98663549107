"""Time the full I-JEPA training step, exactly as ``jepa.train`` runs it.

One timed step = mask sampling through the collate path (``MaskCollator`` with the
configured multi-block masks) + ``jepa.train.train_step`` (context encoder on the kept
tokens, predictor, target forward without grad, loss, backward, AdamW step, EMA update).
Images are synthetic (already-normalised random tensors), so decoding and augmentation
are not timed.

    python -m benchmarks.train_step --model vit_tiny --img-size 224 --batch 16 --precision bf16
    python -m benchmarks.train_step --smoke          # tiny configuration for CI (seconds)

Prints ONE JSON line on stdout (progress goes to stderr):
``step_ms`` / ``step_ms_p10`` / ``step_ms_p90`` are the median / 10th / 90th percentile
over the timed steps, ``items_per_s`` = batch / median step seconds, ``collate_ms`` the
median of the collate part alone. ``peak_mem_bytes`` is ``torch.cuda.max_memory_allocated``
over the timed steps on CUDA; on CPU it is the peak resident set size of the whole process
since it started (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux, times 1024), so it
includes the Python interpreter and the libraries.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from accelerate import Accelerator

from benchmarks.report import device_name
from jepa.build import build_jepa, build_masks, build_optimizer
from jepa.config import Config, ConfigError, load_config
from jepa.data.pretrain import MaskCollator
from jepa.models.jepa import JEPA
from jepa.models.vit import VIT_SIZES
from jepa.train import resolve_precision, step_values, train_step

# --smoke: vit_tiny cut to 2 blocks on a 32 px image with 4 px patches (an 8x8 grid, on
# which the reference masks still work), a 64 x 2 predictor, batch 4, 1 warmup + 2 steps.
SMOKE = dict(model="vit_tiny", img_size=32, patch_size=4, batch=4, pred_width=64, pred_depth=2, pred_heads=4,
             warmup=1, steps=2)
SMOKE_OVERRIDES = ("encoder.depth=2",)


def make_config(*, model: str, img_size: int, patch_size: int, batch: int, pred_width: int, pred_depth: int,
                pred_heads: int, total_steps: int, precision: str, extra: tuple[str, ...] = ()) -> Config:
    """The run configuration: the named ViT size, reference masks, plain I-JEPA loss (no VICReg terms)."""
    cfg = load_config(None, [
        "encoder.in_chans=3", f"encoder.patch_size={patch_size}", f"data.img_size={img_size}",
        f"data.batch_size={batch}", f"predictor.embed_dim={pred_width}", f"predictor.depth={pred_depth}",
        f"predictor.num_heads={pred_heads}", f"train.steps={total_steps}", f"train.precision={precision}",
        "encoder.depth=null", "loss.var_coeff=0", "loss.cov_coeff=0", *extra,
    ])
    cfg.encoder.arch = model  # any name of VIT_SIZES (checked by the caller and again by build_encoder)
    return cfg


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


@dataclass
class Bench:
    """Everything one training step needs, built the way ``jepa.train.train`` builds it."""

    cfg: Config
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by the accelerator
    core: JEPA  # the unwrapped model
    optimizer: torch.optim.Optimizer
    collate: MaskCollator
    images: torch.Tensor  # [B, 3, H, W] synthetic normalised images
    autocast_dtype: torch.dtype | None

    def step(self, step: int) -> float:
        """One full training step (collate + train_step); returns the collate seconds."""
        start = time.perf_counter()
        first = step * len(self.images)
        batch = self.collate([(image, 0, first + i) for i, image in enumerate(self.images)])  # (image, label, position)
        collate_s = time.perf_counter() - start
        train_step(self.model, self.optimizer, [batch], accelerator=self.accelerator,
                   values=step_values(step, self.cfg), autocast_dtype=self.autocast_dtype,
                   grad_clip=self.cfg.optim.grad_clip)
        return collate_s


def build_bench(cfg: Config) -> Bench:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    model = build_jepa(cfg)
    optimizer = build_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    side = cfg.data.img_size
    images = torch.randn(cfg.data.batch_size, cfg.encoder.in_chans, side, side)
    return Bench(cfg, accelerator, model, accelerator.unwrap_model(model), optimizer,
                 MaskCollator(build_masks(cfg), seed=cfg.seed, global_batch=cfg.data.batch_size), images,
                 resolve_precision(cfg.train.precision, accelerator.device))


def measure(cfg: Config, *, steps: int, warmup: int, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Build from ``cfg``, run ``warmup`` untimed then ``steps`` timed training steps; returns the report."""
    bench = build_bench(cfg)
    device = bench.accelerator.device
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    log(f"device {device_name(device)}, autocast {bench.autocast_dtype}; {warmup} warmup + {steps} timed steps")
    for step in range(warmup):
        bench.step(step)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, collates = [], []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        collates.append(bench.step(step))
        sync()
        times.append(time.perf_counter() - start)
        log(f"step {step - warmup + 1}/{steps}: {times[-1] * 1e3:.1f} ms")

    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    e, p = cfg.encoder, cfg.predictor
    return {
        "device": device_name(device),
        "config": {
            "model": e.arch, "img_size": cfg.data.img_size, "patch": e.patch_size,
            "encoder_depth": len(bench.core.encoder.blocks), "batch": cfg.data.batch_size,
            "precision": cfg.train.precision, "autocast": str(bench.autocast_dtype).replace("torch.", ""),
            "pred_width": p.embed_dim, "pred_depth": p.depth, "pred_heads": p.num_heads,
            "num_targets": cfg.masks.num_targets,
        },
        "step_ms": round(median, 3),
        "step_ms_p10": round(percentile(ms, 10), 3),
        "step_ms_p90": round(percentile(ms, 90), 3),
        "items_per_s": round(cfg.data.batch_size / (median / 1e3), 3),
        "collate_ms": round(statistics.median(collates) * 1e3, 3),
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else peak_rss_bytes(),
        "peak_mem_kind": "cuda_max_memory_allocated" if cuda else "process_peak_rss",
        "steps": steps,
        "warmup": warmup,
        "torch": torch.__version__,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_tiny", help=f"ViT size, one of {', '.join(VIT_SIZES)}")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--pred-width", type=int, default=384)
    parser.add_argument("--pred-depth", type=int, default=12)
    parser.add_argument("--pred-heads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny configuration for CI (overrides model/size/batch/predictor/steps)")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.model not in VIT_SIZES:
        parser.error(f"unknown --model {args.model!r}; valid names: {', '.join(VIT_SIZES)}")
    for name in ("batch", "steps", "img_size", "patch_size", "pred_width", "pred_depth", "pred_heads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.pred_width % args.pred_heads:
        parser.error(f"--pred-width {args.pred_width} is not divisible by --pred-heads {args.pred_heads}")
    return args, parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, parser = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = make_config(model=args.model, img_size=args.img_size, patch_size=args.patch_size, batch=args.batch,
                          pred_width=args.pred_width, pred_depth=args.pred_depth, pred_heads=args.pred_heads,
                          total_steps=args.warmup + args.steps, precision=args.precision,
                          extra=SMOKE_OVERRIDES if args.smoke else ())
    except ConfigError as err:
        parser.error(str(err))
    report = {"command": ["python", "-m", "benchmarks.train_step", *(sys.argv[1:] if argv is None else argv)]}
    report.update(measure(cfg, steps=args.steps, warmup=args.warmup,
                          log=lambda s: print(s, file=sys.stderr, flush=True)))
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
