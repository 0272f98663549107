"""Time the full I-JEPA (or V-JEPA) training step, exactly as ``jepa.train`` runs it.

One timed step = mask sampling through the collate path (``MaskCollator`` with the
configured multi-block masks) + ``jepa.train.train_step`` (context encoder on the kept
tokens, predictor, target forward without grad, loss, backward, AdamW step, EMA update).
Inputs are synthetic (already-normalised random tensors), so decoding and augmentation
are not timed.

    python -m benchmarks.train_step --model vit_tiny --img-size 224 --batch 16 --precision bf16
    python -m benchmarks.train_step --video --frames 16 --batch 2      # the V-JEPA step
    python -m benchmarks.train_step perf.attention=fused predictor.shared_context=true   # any config switch
    python -m benchmarks.train_step --sweep --precision bf16    # each speed switch on and off, as a table
    python -m benchmarks.train_step --profile trace.json        # also write a torch profiler trace (+ trace.txt: top ops)
    python -m benchmarks.train_step --smoke          # tiny configuration for CI (seconds)

Prints ONE JSON line on stdout (progress goes to stderr):
``step_ms`` / ``step_ms_p10`` / ``step_ms_p90`` are the median / 10th / 90th percentile
over the timed steps, ``items_per_s`` = batch / median step seconds, ``collate_ms`` the
median of the collate part alone. ``peak_mem_bytes`` is ``torch.cuda.max_memory_allocated``
over the timed steps on CUDA; on CPU it is the peak resident set size of the whole process
since it started (``getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux, times 1024), so it
includes the Python interpreter and the libraries. ``step_tflop`` is the explicit FLOP count
of the mean timed step (``jepa.flops``), ``tflop_per_s`` that over the median step time, and
``mfu`` that over the device's dense bf16 peak where it is known (bf16 runs on GPUs).
``train_step_ms`` / ``train_mfu`` leave the collate part out: in training the loader's worker
processes sample the masks while the device runs the previous step. On CUDA the collated batch
is pinned, as the loader's ``pin_memory`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from torch.profiler import ProfilerActivity
from torch.profiler import profile as profile_steps

from benchmarks.report import device_name
from jepa.build import build_jepa, build_masks, build_optimizer, grid_size, is_video, static_shapes
from jepa.config import Config, ConfigError, load_config
from jepa.data.pretrain import MaskCollator
from jepa.flops import StepShape, peak_flops, step_flops, step_shape
from jepa.masks import MaskGenerator, MaskSet, MultiBlock3DMasks, token_multiple_for
from jepa.models.jepa import JEPA
from jepa.models.vit import VIT_SIZES
from jepa.onednn_linear import resolve_onednn_linear
from jepa.perf import apply_perf, fused_attention_for, split_attention_for
from jepa.precision import resolve_precision
from jepa.train import step_values, train_step

# --smoke: vit_tiny cut to 2 blocks on a 32 px image with 4 px patches (an 8x8 grid, on
# which the reference masks still work), a 64 x 2 predictor, batch 4, 1 warmup + 2 steps.
SMOKE = dict(model="vit_tiny", img_size=32, patch_size=4, batch=4, pred_width=64, pred_depth=2, pred_heads=4,
             warmup=1, steps=2)
SMOKE_OVERRIDES = ("encoder.depth=2",)
# The V-JEPA step: 3-D multi-block masks (two mask sets), tubelets of 2 frames, L1 loss.
VIDEO_OVERRIDES = ("data.source=moving-digits", "video.tubelet_size=2", "loss.kind=l1")

# What --sweep toggles, each against the configuration as given (its "baseline").
SWEEP = {
    "attention": ("perf.attention", {"math": "fused", "fused": "math"}),
    "cudnn_attention": ("perf.cudnn_attention", {"False": "true", "True": "false"}),
    "shared_context": ("predictor.shared_context", {"False": "true", "True": "false"}),
    "split_attention": ("perf.split_attention", {"False": "true", "True": "false"}),
    "fused_optimizer": ("perf.fused_optimizer", {"False": "true", "True": "false"}),
    "onednn_linear": ("perf.onednn_linear", {"False": "true", "True": "false"}),
    "compile": ("perf.compile", {"False": "true", "True": "false"}),
    "activation_checkpointing": ("perf.activation_checkpointing", {"False": "true", "True": "false"}),
    "token_multiple": ("masks.token_multiple", {"1": "8", "other": "1"}),
    "context_tokens": ("masks.context_tokens", {"None": "auto", "other": "null"}),
}


def make_config(*, model: str, img_size: int, patch_size: int, batch: int, pred_width: int, pred_depth: int,
                pred_heads: int, total_steps: int, precision: str, frames: int | None = None,
                extra: tuple[str, ...] = ()) -> Config:
    """The run configuration: the named ViT size, reference masks, plain JEPA loss (no VICReg terms).

    ``frames`` makes it the V-JEPA step on clips of that many frames.
    """
    video = (*VIDEO_OVERRIDES, f"video.num_frames={frames}") if frames else ()
    cfg = load_config(None, [
        "encoder.in_chans=3", f"encoder.patch_size={patch_size}", f"data.img_size={img_size}",
        f"data.batch_size={batch}", f"predictor.embed_dim={pred_width}", f"predictor.depth={pred_depth}",
        f"predictor.num_heads={pred_heads}", f"train.steps={total_steps}", f"train.precision={precision}",
        "encoder.depth=null", "loss.var_coeff=0", "loss.cov_coeff=0", *video, *extra,
    ])
    cfg.encoder.arch = model  # any name of VIT_SIZES (checked by the caller and again by build_encoder)
    return cfg


def fixed_counts_of(masks: MaskGenerator) -> int | list[list[int]] | None:
    """The fixed token counts ``masks`` draws: an image's context count, or a (context, target) pair per clip
    mask set; None where they vary."""
    if isinstance(masks, MultiBlock3DMasks):
        return [list(pair) for pair in masks.fixed_counts] if masks.fixed_counts else None
    return getattr(masks, "context_tokens", None)


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
    images: torch.Tensor  # [B, 3, H, W] synthetic normalised images, or clips [B, 3, T, H, W]
    autocast_dtype: torch.dtype | None
    flop_shape: StepShape

    def step(self, step: int) -> tuple[float, int]:
        """One full training step (collate + train_step); returns the collate seconds and the step's FLOPs."""
        start = time.perf_counter()
        first = step * len(self.images)
        batch = self.collate([(image, 0, first + i) for i, image in enumerate(self.images)])  # (image, label, position)
        if self.accelerator.device.type == "cuda":  # as the loader's pin_memory does, so copies are asynchronous
            batch = pinned(batch)
        collate_s = time.perf_counter() - start
        train_step(self.model, self.optimizer, [batch], accelerator=self.accelerator,
                   values=step_values(step, self.cfg), autocast_dtype=self.autocast_dtype,
                   grad_clip=self.cfg.optim.grad_clip)
        return collate_s, step_flops(self.flop_shape, batch["masks"])["step"]


def pinned(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors in page-locked memory."""
    masks = [MaskSet(*(idx.pin_memory() for idx in mask_set)) for mask_set in batch["masks"]]
    return {**{key: value.pin_memory() for key, value in batch.items() if key != "masks"}, "masks": masks}


def build_bench(cfg: Config) -> Bench:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    model = build_jepa(cfg)
    optimizer = build_optimizer(model, cfg)
    apply_perf(model, cfg.perf, accelerator.device, resolve_precision(cfg.train.precision, accelerator.device),
               static=static_shapes(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    side = cfg.data.img_size
    frames = (cfg.video.num_frames,) if is_video(cfg) else ()
    images = torch.randn(cfg.data.batch_size, cfg.encoder.in_chans, *frames, side, side)
    collate = MaskCollator(build_masks(cfg), seed=cfg.seed, global_batch=cfg.data.batch_size)
    autocast_dtype = resolve_precision(cfg.train.precision, accelerator.device)
    split = split_attention_for(cfg.perf.split_attention, accelerator.device, autocast_dtype)
    return Bench(cfg, accelerator, model, accelerator.unwrap_model(model), optimizer, collate, images,
                 autocast_dtype, step_shape(cfg, split_attention=split))


def measure(cfg: Config, *, steps: int, warmup: int, log: Callable[[str], None] = lambda s: None,
            profile: str | None = None) -> dict[str, Any]:
    """Build from ``cfg``, run ``warmup`` untimed then ``steps`` timed training steps; returns the report.

    ``profile``: a path to which two more steps are written as a torch profiler (Chrome) trace.
    """
    bench = build_bench(cfg)
    device = bench.accelerator.device
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    log(f"device {device_name(device)}, autocast {bench.autocast_dtype}; {warmup} warmup + {steps} timed steps")
    warmup_s = warm_up(bench.step, warmup, sync)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times, collates, flops = [], [], []
    for step in range(warmup, warmup + steps):
        start = time.perf_counter()
        collate_s, step_flop = bench.step(step)
        sync()
        times.append(time.perf_counter() - start)
        collates.append(collate_s)
        flops.append(step_flop)
        log(f"step {step - warmup + 1}/{steps}: {times[-1] * 1e3:.1f} ms")
    timing = timing_fields(times, collates, batch=cfg.data.batch_size, device=device)
    if profile:
        write_trace(bench, profile, first_step=warmup + steps, sync=sync)
        log(f"profiler trace: {profile}")

    median = statistics.median(t * 1e3 for t in times)
    train_median = statistics.median((t - c) * 1e3 for t, c in zip(times, collates))
    tflop_per_s = statistics.mean(flops) / (median / 1e3) / 1e12
    train_tflop_per_s = statistics.mean(flops) / (train_median / 1e3) / 1e12
    peak = peak_flops(device_name(device)) if cuda and bench.autocast_dtype == torch.bfloat16 else None
    e, p = cfg.encoder, cfg.predictor
    return {
        "device": device_name(device),
        "config": {
            "model": e.arch, "img_size": cfg.data.img_size, "patch": e.patch_size,
            "encoder_depth": len(bench.core.encoder.blocks), "batch": cfg.data.batch_size,
            "precision": cfg.train.precision, "autocast": str(bench.autocast_dtype).replace("torch.", ""),
            "pred_width": p.embed_dim, "pred_depth": p.depth, "pred_heads": p.num_heads,
            "num_targets": cfg.masks.num_targets, "frames": cfg.video.num_frames if is_video(cfg) else None,
            "perf": dataclasses.asdict(cfg.perf), "shared_context": p.shared_context,
            "onednn_linear_used": resolve_onednn_linear(cfg.perf.onednn_linear, device),
            "split_attention_used": bench.flop_shape.split_attention,
            "token_multiple_used": getattr(bench.collate.mask_generator, "token_multiple", None),
            "context_tokens_used": fixed_counts_of(bench.collate.mask_generator),
        },
        **timing,
        "step_tflop": round(statistics.mean(flops) / 1e12, 4),
        "tflop_per_s": round(tflop_per_s, 4),
        "mfu": round(tflop_per_s * 1e12 / peak, 4) if peak else None,
        "train_step_ms": round(train_median, 3),
        "train_mfu": round(train_tflop_per_s * 1e12 / peak, 4) if peak else None,
        "steps": steps,
        "warmup": warmup,
        "warmup_s": round(warmup_s, 3),
        "torch": torch.__version__,
    }


def warm_up(step: Callable[[int], object], count: int, sync: Callable[[], None]) -> float:
    """Run ``step(0) .. step(count - 1)`` untimed (compilation, allocator and kernel caches settle there);
    returns the seconds they took, reported so that a compile's cost is seen next to the step it buys."""
    start = time.perf_counter()
    for i in range(count):
        step(i)
    sync()
    return time.perf_counter() - start


def timing_fields(times: list[float], collates: list[float], *, batch: int, device: torch.device) -> dict[str, Any]:
    """The report's timing and memory fields from the timed steps' seconds and their collate parts' seconds
    (memory read now: call it right after the timed steps)."""
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    cuda = device.type == "cuda"
    return {
        "step_ms": round(median, 3),
        "step_ms_p10": round(percentile(ms, 10), 3),
        "step_ms_p90": round(percentile(ms, 90), 3),
        "items_per_s": round(batch / (median / 1e3), 3),
        "collate_ms": round(statistics.median(collates) * 1e3, 3),
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated(device)) if cuda else peak_rss_bytes(),
        "peak_mem_kind": "cuda_max_memory_allocated" if cuda else "process_peak_rss",
    }


def write_trace(bench: Bench, path: str, *, first_step: int, sync: Callable[[], None]) -> None:
    """Two more steps under the torch profiler, written as a Chrome trace (chrome://tracing, Perfetto), and
    the 40 ops with the most self time as a table beside it (same name, ``.txt``): what to read first."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile_steps(activities=activities, record_shapes=True) as prof:
        for step in range(first_step, first_step + 2):
            bench.step(step)
        sync()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(path))
    sort_by = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    Path(path).with_suffix(".txt").write_text(prof.key_averages().table(sort_by=sort_by, row_limit=40))


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an ascending list."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


STEP_SIZES = ("batch", "steps", "img_size", "patch_size", "pred_width", "pred_depth", "pred_heads")


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that fix a step's configuration and timing, shared with ``benchmarks.reference_step`` so
    both programs time the same thing under the same names and defaults."""
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


def check_step_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error for sizes below 1, a negative warm-up or thread count, or indivisible heads."""
    if args.model not in VIT_SIZES:
        parser.error(f"unknown --model {args.model!r}; valid names: {', '.join(VIT_SIZES)}")
    for name in STEP_SIZES:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.pred_width % args.pred_heads:
        parser.error(f"--pred-width {args.pred_width} is not divisible by --pred-heads {args.pred_heads}")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny configuration for CI (overrides model/size/batch/predictor/steps)")
    parser.add_argument("--video", action="store_true", help="the V-JEPA step on synthetic clips")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip with --video")
    parser.add_argument("--profile", metavar="TRACE.json", help="also write a torch profiler trace of two steps")
    parser.add_argument("--sweep", action="store_true",
                        help="run each speed switch flipped against this configuration (one process each)")
    parser.add_argument("--switches", default=",".join(SWEEP), help=f"what --sweep flips, of {', '.join(SWEEP)}")
    parser.add_argument("--rounds", type=int, default=1, help="--sweep repeats; each figure is the median")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. perf.attention=fused predictor.shared_context=true")
    args = parser.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    check_step_arguments(parser, args)
    if args.frames < 1 or args.rounds < 1:
        parser.error("--frames and --rounds must be >= 1")
    unknown = set(args.switches.split(",")) - set(SWEEP)
    if unknown:
        parser.error(f"unknown --switches {sorted(unknown)}; valid: {', '.join(SWEEP)}")
    return args, parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, parser = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg = make_config(model=args.model, img_size=args.img_size, patch_size=args.patch_size, batch=args.batch,
                          pred_width=args.pred_width, pred_depth=args.pred_depth, pred_heads=args.pred_heads,
                          total_steps=args.warmup + args.steps, precision=args.precision,
                          frames=args.frames if args.video else None,
                          extra=(*(SMOKE_OVERRIDES if args.smoke else ()), *args.overrides))
    except ConfigError as err:
        parser.error(str(err))
    argv = sys.argv[1:] if argv is None else argv
    if args.sweep:
        report = sweep(cfg, argv, switches=args.switches.split(","), rounds=args.rounds, log=log)
    else:
        report = {"command": ["python", "-m", "benchmarks.train_step", *argv]}
        report.update(measure(cfg, steps=args.steps, warmup=args.warmup, log=log, profile=args.profile))
    print(json.dumps(report), flush=True)
    return report


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sweep(cfg: Config, argv: list[str], *, switches: list[str], rounds: int,
          log: Callable[[str], None]) -> dict[str, Any]:
    """The configuration as given, then each switch flipped, each in a fresh process (so peak memory is its own).

    Rounds interleave the variants so that drift of a shared machine hits them alike; each figure
    is the median over rounds, and ``ratio`` is items/s over the baseline's.
    """
    base_argv = strip_options(argv, flags={"--sweep"}, valued={"--switches", "--rounds", "--profile"})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    variants: dict[str, list[str]] = {"baseline": []}
    for name in switches:
        key, flip = SWEEP[name]
        section, field_name = key.split(".")
        current = str(getattr(getattr(cfg, section), field_name))
        if name == "attention":  # 'auto' stands for what it picks on this device
            fused = fused_attention_for(current, device, resolve_precision(cfg.train.precision, device),
                                        step_shape(cfg, split_attention=False).num_tokens)
            current = "fused" if fused else "math"
        if name == "split_attention":
            current = str(split_attention_for(cfg.perf.split_attention, device,
                                              resolve_precision(cfg.train.precision, device)))
        if name == "onednn_linear":
            current = str(resolve_onednn_linear(cfg.perf.onednn_linear, device))
        if name == "token_multiple":
            resolved = token_multiple_for(cfg.masks.token_multiple, grid_size(cfg))
            current = "1" if resolved == 1 else "other"
        if name == "context_tokens":
            current = "None" if cfg.masks.context_tokens is None else "other"
        variants[f"{name}={flip[current]}"] = [f"{key}={flip[current]}"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for round_ in range(rounds):
        for name, extra in variants.items():
            log(f"round {round_ + 1}/{rounds}: {name}")
            command = [sys.executable, "-m", "benchmarks.train_step", *base_argv, *extra]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = []
    for name, reports in runs.items():
        rows.append({
            "variant": name,
            "step_ms": statistics.median(r["step_ms"] for r in reports),
            "items_per_s": statistics.median(r["items_per_s"] for r in reports),
            "peak_mem_bytes": max(r["peak_mem_bytes"] for r in reports),
            "tflop_per_s": statistics.median(r["tflop_per_s"] for r in reports),
        })
    base = rows[0]["items_per_s"]
    for row in rows:
        row["ratio"] = round(row["items_per_s"] / base, 3)
    log(format_table(rows))
    return {"command": ["python", "-m", "benchmarks.train_step", *argv], "device": runs["baseline"][0]["device"],
            "config": runs["baseline"][0]["config"], "rounds": rounds, "variants": rows}


def strip_options(argv: list[str], *, flags: set[str], valued: set[str]) -> list[str]:
    """``argv`` without the given flags and valued options (``--opt value`` and ``--opt=value`` forms)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags or arg.split("=", 1)[0] in valued and "=" in arg:
            continue
        elif arg in valued:
            skip = True
        else:
            kept.append(arg)
    return kept


def format_table(rows: list[dict[str, Any]]) -> str:
    """The sweep as a Markdown table."""
    lines = ["| variant | step ms | items/s | ratio | peak MiB |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['step_ms']:.0f} | {r['items_per_s']:.2f} | {r['ratio']:.2f} "
                     f"| {r['peak_mem_bytes'] / 2**20:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
