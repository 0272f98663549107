"""Time the reference implementation's I-JEPA training step with the protocol of ``benchmarks.train_step``.

Issue 8 compares our step with facebookresearch/ijepa's at the same configuration. This program
imports the reference's own modules from a checkout you give it (nothing of it ships here, and
nothing is downloaded) and times its step on the CPU or GPU at hand:

    git clone https://github.com/facebookresearch/ijepa /path/to/ijepa     # once, where you have a network
    python -m benchmarks.reference_step --ijepa /path/to/ijepa --precision bf16 --steps 20
    python -m benchmarks.train_step --precision bf16 --steps 20             # ours, the same configuration

One timed step = the reference's multi-block mask collator on a batch + its ``train.py`` step:
target encoder forward without gradient, layer norm, the target blocks' tokens (``apply_masks``,
``repeat_interleave_batch``), context encoder on the context mask, predictor, smooth L1, backward,
AdamW (its weight-decay groups), and the EMA as its per-parameter loop. bf16 is CPU or CUDA autocast
over the forward and loss, as the reference's ``use_bfloat16`` (no gradient scaler: bf16 needs none).
Left out: its learning-rate and weight-decay schedules and its gradient-norm logging, which cost
microseconds. The predictor is the reference's ``vit_predictor`` with ``--pred-heads`` heads (its
``helper.init_model`` gives it the encoder's head count, 3 for ViT-Tiny; ours is timed with 12).

Prints one JSON line with the fields of ``benchmarks.train_step`` that apply (``step_ms`` median,
p10 / p90, ``items_per_s``, ``collate_ms``, ``peak_mem_bytes``), plus the checkout's path and commit.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.report import device_name
from benchmarks.train_step import add_step_arguments, check_step_arguments, timing_fields, warm_up

MODULES = ("src.models.vision_transformer", "src.masks.multiblock", "src.masks.utils", "src.utils.tensors")
EMA_MOMENTUM = 0.996  # the reference's first value; the schedule moves it by 1e-8 a step


def import_reference(root: Path) -> dict[str, ModuleType]:
    """The reference's modules from the checkout at ``root``, by their dotted names."""
    missing = [name for name in MODULES if not (root / (name.replace(".", "/") + ".py")).is_file()]
    if missing:
        raise FileNotFoundError(f"{root} is not a facebookresearch/ijepa checkout: missing {', '.join(missing)}")
    # Its modules call logging.basicConfig(stream=sys.stdout) on import; a handler set first keeps stdout for JSON.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    sys.path.insert(0, str(root))
    return {name: importlib.import_module(name) for name in MODULES}


def checkout_commit(root: Path) -> str | None:
    """The checkout's git commit, where it is the top of a git work tree (not a folder inside another one)."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                          text=True)
    lines = done.stdout.split()
    return lines[1] if done.returncode == 0 and Path(lines[0]).resolve() == root.resolve() else None


def weight_decay_groups(*models: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as the reference's ``init_opt``: no decay on biases and other 1-D parameters."""
    params = [(n, p) for m in models for n, p in m.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in params if "bias" not in n and p.ndim != 1], "weight_decay": weight_decay},
            {"params": [p for n, p in params if "bias" in n or p.ndim == 1], "weight_decay": 0.0}]


class ReferenceStep:
    """The reference's models, mask collator and optimizer, and its training step."""

    def __init__(self, ref: dict[str, ModuleType], *, model: str, img_size: int, patch_size: int,
                 pred_width: int, pred_depth: int, pred_heads: int, device: torch.device, seed: int):
        vit = ref["src.models.vision_transformer"]
        torch.manual_seed(seed)
        self.encoder = vit.__dict__[model](img_size=[img_size], patch_size=patch_size).to(device)
        self.predictor = vit.__dict__["vit_predictor"](
            num_patches=self.encoder.patch_embed.num_patches, embed_dim=self.encoder.embed_dim,
            predictor_embed_dim=pred_width, depth=pred_depth, num_heads=pred_heads).to(device)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(weight_decay_groups(self.encoder, self.predictor, weight_decay=0.04),
                                           lr=1e-3)
        self.collate = ref["src.masks.multiblock"].MaskCollator(
            input_size=img_size, patch_size=patch_size, pred_mask_scale=(0.15, 0.2), enc_mask_scale=(0.85, 1.0),
            aspect_ratio=(0.75, 1.5), nenc=1, npred=4, allow_overlap=False, min_keep=10)
        self.collate._itr_counter.value = seed - 1  # it seeds each batch's masks with a counter from 0
        self.apply_masks = ref["src.masks.utils"].apply_masks
        self.repeat = ref["src.utils.tensors"].repeat_interleave_batch
        self.device = device

    def __call__(self, images: torch.Tensor, autocast: bool) -> tuple[float, float]:
        """One step (masks + training step) on ``images``; returns (collate seconds, loss)."""
        start = time.perf_counter()
        _, masks_enc, masks_pred = self.collate(list(range(len(images))))
        masks_enc = [m.to(self.device, non_blocking=True) for m in masks_enc]
        masks_pred = [m.to(self.device, non_blocking=True) for m in masks_pred]
        collate_s = time.perf_counter() - start
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                h = self.target(images)
                h = self.repeat(self.apply_masks(F.layer_norm(h, h.shape[-1:]), masks_pred), len(images),
                                repeat=len(masks_enc))
            z = self.predictor(self.encoder(images, masks_enc), masks_enc, masks_pred)
            loss = F.smooth_l1_loss(z, h)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        with torch.no_grad():
            for online, target in zip(self.encoder.parameters(), self.target.parameters()):
                target.data.mul_(EMA_MOMENTUM).add_((1.0 - EMA_MOMENTUM) * online.detach().data)
        return collate_s, float(loss.detach())  # the reference's step returns float(loss), a host sync, as here


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reference_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ijepa", type=Path, required=True, help="a checkout of facebookresearch/ijepa")
    add_step_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_step_arguments(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        ref = import_reference(args.ijepa.resolve())
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    step = ReferenceStep(ref, model=args.model, img_size=args.img_size, patch_size=args.patch_size,
                         pred_width=args.pred_width, pred_depth=args.pred_depth, pred_heads=args.pred_heads,
                         device=device, seed=args.seed)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    autocast = args.precision == "bf16"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup_s = warm_up(lambda _: step(images, autocast), args.warmup, sync)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, collates, losses = [], [], []
    for i in range(args.steps):
        start = time.perf_counter()
        collate_s, loss = step(images, autocast)
        sync()
        times.append(time.perf_counter() - start)
        collates.append(collate_s)
        losses.append(loss)
        print(f"step {i + 1}/{args.steps}: {times[-1] * 1e3:.1f} ms, loss {loss:.4f}", file=sys.stderr, flush=True)
    report = {
        "command": ["python", "-m", "benchmarks.reference_step", *(sys.argv[1:] if argv is None else argv)],
        "implementation": "facebookresearch/ijepa", "checkout": str(args.ijepa.resolve()),
        "commit": checkout_commit(args.ijepa), "device": device_name(device),
        "config": {"model": args.model, "img_size": args.img_size, "patch": args.patch_size, "batch": args.batch,
                   "precision": args.precision, "pred_width": args.pred_width, "pred_depth": args.pred_depth,
                   "pred_heads": args.pred_heads, "num_targets": 4},
        **timing_fields(times, collates, batch=args.batch, device=device),
        "losses": [round(x, 6) for x in losses], "steps": args.steps, "warmup": args.warmup,
        "warmup_s": round(warmup_s, 3), "torch": torch.__version__,
    }
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
