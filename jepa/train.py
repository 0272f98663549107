"""The one training loop (images now, video through the same code): Accelerate, exact resume, safe stops."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm import tqdm

from jepa import schedules
from jepa.batching import BatchPlan, batch_plan, lr_scale
from jepa.build import (build_encoder, build_image_data, build_jepa, build_masks, build_optimizer, is_video,
                        static_shapes)
from jepa.checkpoint import FORMAT, load_checkpoint, load_matching, save_checkpoint
from jepa.config import Config, ConfigError, save_config, to_dict
from jepa.data.pretrain import MaskCollator, SeededViews, train_transform
from jepa.data.sampling import StepSampler
from jepa.data.video_data import video_train_loader
from jepa.distributed import (
    BatchGather, DistributedEnvError, StopVote, check_distributed_env, check_replicas_agree,
)
from jepa.evaluation import per_frame_pooled, pooled, probe_datasets, probe_features, raw_pixels
from jepa.losses import effective_rank, feature_std
from jepa.masks import MaskSet
from jepa.metrics import MetricsWriter, plot_curves, read_metrics
from jepa.models.jepa import JEPA
from jepa.monitor import KnnMonitor
from jepa.perf import apply_perf, keep_compiled_kernels
from jepa.precision import resolve_precision


class TrainingStopped(RuntimeError):
    """Training ended early on a signal, after saving a checkpoint it can resume from."""

    def __init__(self, message: str, *, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name  # agreed by all ranks: the launcher requeues on the preemption signal


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left in place."""


@dataclass(frozen=True)
class StepValues:
    """Hyper-parameters in force at one optimizer step."""

    lr: float
    weight_decay: float
    momentum: float


def step_values(step: int, cfg: Config) -> StepValues:
    """lr warmup + cosine (scaled by ``optim.lr_scaling``), weight-decay cosine, EMA momentum linear:
    pure functions of the step."""
    o, total = cfg.optim, cfg.train.steps
    scale = lr_scale(o, cfg.data.batch_size)
    return StepValues(
        lr=scale * schedules.warmup_cosine(
            step, total, warmup=o.warmup_steps, start=o.start_lr, peak=o.lr, final=o.final_lr
        ),
        weight_decay=schedules.cosine(step, total, *o.weight_decay),
        momentum=schedules.linear(step, total, *o.ema),
    )


def apply_values(optimizer: torch.optim.Optimizer, values: StepValues) -> None:
    for group in optimizer.param_groups:
        group["lr"] = values.lr
        if group.get("apply_wd", True):
            group["weight_decay"] = values.weight_decay


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    micro_batches: list[dict[str, Any]],
    *,
    accelerator: Accelerator,
    values: StepValues,
    autocast_dtype: torch.dtype | None,
    grad_clip: float | None,
) -> dict[str, torch.Tensor]:
    """One optimizer step over ``micro_batches`` (gradient accumulation), then the EMA update.

    Returns the loss terms averaged over the micro-batches as device tensors
    (no host sync) plus the last micro-batch's pooled target features.
    """
    apply_values(optimizer, values)
    device = accelerator.device
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        inputs = batch["inputs"].to(device, non_blocking=True)
        masks = [MaskSet(*(idx.to(device, non_blocking=True) for idx in mask_set)) for mask_set in batch["masks"]]
        with nullcontext() if last else accelerator.no_sync(model):
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                terms = model(inputs, masks)
            accelerator.backward(terms["loss"] / len(micro_batches))
        for key, value in terms.items():
            if value.ndim == 0:
                sums[key] = sums.get(key, 0.0) + value.detach() / len(micro_batches)
    if grad_clip is not None:
        accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    accelerator.unwrap_model(model).update_target(values.momentum)
    sums["target_pooled"] = terms["target_pooled"]
    return sums


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[signal.Signals] = STOP_SIGNALS) -> Iterator[dict[str, int]]:
    """Turn the first of ``signals`` into a flag (its number) the loop checks; a second one interrupts at once."""
    flag = {"signal": 0}
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        if flag["signal"]:
            raise KeyboardInterrupt
        flag["signal"] = int(signum)

    try:
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be caught here
        previous.clear()
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def new_run_dir() -> str:
    """A new time-stamped folder name under runs/."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{stamp}-{random.Random().randrange(16**4):04x}")


def resolve_run_dir(cfg: Config, accelerator: Accelerator | None = None) -> Path:
    """The configured run folder, or a new one named by the main process and shared with every rank."""
    if cfg.run_dir is None:
        name = [new_run_dir()]
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(name, from_process=0)
        cfg.run_dir = name[0]
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def checkpoint_state(
    model: JEPA, optimizer: torch.optim.Optimizer, step: int, cfg: Config, *, restarts: int = 0
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "step": step,
        "restarts": restarts,
        "config": to_dict(cfg),
        "encoder": model.encoder.state_dict(),
        "target_encoder": model.target_encoder.state_dict(),
        "predictor": model.predictor.state_dict(),
        "opt": optimizer.state_dict(),
    }


def restore(model: JEPA, optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """Load a training checkpoint into ``model`` and ``optimizer``, refusing any mismatch."""
    for part in ("encoder", "target_encoder", "predictor"):
        load_matching(getattr(model, part), state[part], f"{path} [{part}]")
    optimizer.load_state_dict(state["opt"])


def all_finite(model: torch.nn.Module) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())


def train_loader(cfg: Config, *, start_batch: int, rank: int, world_size: int) -> torch.utils.data.DataLoader:
    """This rank's micro-batches with masks: images from ``start_batch`` on (exact resume), or a clip stream.

    Images: micro-batch ``g`` of rank ``r`` holds global stream positions ``g * micro * world + r * micro ...``,
    each view and mask row a function of the seed and the position, so the samples of a step and what is
    done to them do not depend on how the global batch is split over ranks and accumulation steps.
    """
    micro = batch_plan(cfg, world_size).micro_batch
    if is_video(cfg):
        if cfg.encoder.in_chans != 3:
            raise ConfigError(f"video clips decode to 3 channels but encoder.in_chans is {cfg.encoder.in_chans}")
        return video_train_loader(cfg, build_masks(cfg), micro_batch=micro, rank=rank, world_size=world_size)
    data = build_image_data(cfg, "train")
    views = SeededViews(
        data.dataset,
        train_transform(img_size=cfg.data.img_size, crop_scale=cfg.data.crop_scale, crop_ratio=cfg.data.crop_ratio,
                        hflip=cfg.data.hflip, mean=data.mean, std=data.std),
        seed=cfg.seed,
    )
    sampler = StepSampler(len(data.dataset), micro, seed=cfg.seed, start_batch=start_batch, rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(
        views,
        batch_sampler=sampler,
        collate_fn=MaskCollator(build_masks(cfg), seed=cfg.seed, global_batch=cfg.data.batch_size),
        num_workers=cfg.data.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.data.num_workers > 0,
    )


def start_accelerator() -> Accelerator:
    """Accelerate on the validated launch environment; refuses to run a multi-process launch as one process."""
    env = check_distributed_env(os.environ)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if env is not None and (accelerator.num_processes, accelerator.process_index) != (env.world_size, env.rank):
        raise DistributedEnvError(
            f"launched as rank {env.rank} of {env.world_size} but Accelerate runs rank {accelerator.process_index} "
            f"of {accelerator.num_processes}; every process would train alone"
        )
    return accelerator


def train(cfg: Config, *, stop_signals: Sequence[signal.Signals] = STOP_SIGNALS) -> dict[str, Any]:
    """Pretrain (or resume) the run in ``cfg.run_dir``, then probe it; returns the summary it writes.

    The first of ``stop_signals`` (on any rank) ends training after the same step on every rank
    with a checkpoint and :class:`TrainingStopped`.
    """
    wall_start = time.perf_counter()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = start_accelerator()
    main = accelerator.is_main_process
    world = accelerator.num_processes
    plan = batch_plan(cfg, world)
    run_dir = resolve_run_dir(cfg, accelerator)
    autocast_dtype = resolve_precision(cfg.train.precision, accelerator.device)
    compile_cache = keep_compiled_kernels(run_dir) if cfg.perf.compile else None
    if main:
        print(f"run folder: {run_dir}", flush=True)
        print(plan.describe(), flush=True)
        if compile_cache is not None:
            print(f"compiled kernels kept in {compile_cache}", flush=True)
        save_config(cfg, run_dir / "config.yaml")

    ckpt_path = run_dir / "checkpoint.pt"
    state = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    start_step = int(state["step"]) if state else 0
    restarts = int(state.get("restarts", 0)) + 1 if state else 0
    loader = train_loader(cfg, start_batch=start_step * cfg.optim.accum_steps, rank=accelerator.process_index,
                          world_size=world)  # before the model, so missing data fails at once
    torch.manual_seed(cfg.seed)
    model = build_jepa(cfg, gather=BatchGather.for_world(world))
    optimizer = build_optimizer(model, cfg)
    if state is not None:
        restore(model, optimizer, state, ckpt_path)
        if main:
            print(f"resuming from {ckpt_path} at step {start_step}", flush=True)
    apply_perf(model, cfg.perf, accelerator.device, autocast_dtype,
               static=static_shapes(cfg))
    model, optimizer = accelerator.prepare(model, optimizer)
    core: JEPA = accelerator.unwrap_model(model)

    total = cfg.train.steps
    metrics_path = run_dir / "metrics.jsonl"
    if main and metrics_path.exists():  # drop records logged after the checkpoint we resume from
        kept = [r for r in read_metrics(metrics_path) if r["step"] <= start_step]
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    writer = MetricsWriter(run_dir, cfg.wandb, to_dict(cfg)) if main else None
    monitor = KnnMonitor(cfg, device=accelerator.device, autocast_dtype=autocast_dtype) if (
        main and cfg.probe.monitor_every) else None
    trained = start_step < total
    vote = StopVote.for_world(world)
    try:
        if trained:
            _loop(cfg, model, core, optimizer, accelerator, loader, start_step, autocast_dtype, writer, ckpt_path,
                  monitor, Progress(plan, restarts, vote, tuple(stop_signals)))
        elif main:
            print(f"{ckpt_path} is already at step {start_step} >= train.steps {total}; nothing to train", flush=True)
    finally:
        vote.close()
        if writer is not None:
            writer.close()
    if not main:
        return {}
    plot_curves(read_metrics(metrics_path), run_dir / "loss_curve.png")
    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "steps": total, "checkpoint": str(ckpt_path), "restarts": restarts,
        "world_size": world, "global_batch": plan.global_batch, "micro_batch": plan.micro_batch,
    }
    if cfg.probe.enabled:
        summary.update(probe_summary(cfg, core, accelerator.device, autocast_dtype))
    summary["wall_time_s"] = round(time.perf_counter() - wall_start, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass(frozen=True)
class Progress:
    """What the loop needs besides the model and data: the batch plan, restart count and how to stop."""

    plan: BatchPlan
    restarts: int
    vote: StopVote
    stop_signals: tuple[signal.Signals, ...]


def _loop(cfg: Config, model, core: JEPA, optimizer, accelerator: Accelerator, loader, start_step: int,
          autocast_dtype, writer: MetricsWriter | None, ckpt_path: Path, monitor: KnnMonitor | None,
          progress: Progress) -> None:
    """Steps ``start_step`` .. ``train.steps``: log every N, checkpoint every M and on a stop signal."""
    total, accum = cfg.train.steps, cfg.optim.accum_steps
    batches = iter(loader)
    main = accelerator.is_main_process
    bar = tqdm(total=total, initial=start_step, disable=not main, desc="train", dynamic_ncols=True)
    sums: dict[str, torch.Tensor] = {}
    pending, skipped, warned = 0, 0, 0
    interval_start, last_good = time.perf_counter(), start_step
    with stop_on_signals(progress.stop_signals) as stop:
        for step in range(start_step, total):
            micro = [next(batches) for _ in range(accum)]
            skipped += sum(int(b["skipped"]) for b in micro)
            if skipped // cfg.data.warn_every >= warned and skipped > 0 and main:
                tqdm.write(f"warning: {skipped} unreadable samples skipped so far", file=sys.stderr)
                warned = skipped // cfg.data.warn_every + 1
            values = step_values(step, cfg)
            terms = train_step(model, optimizer, micro, accelerator=accelerator, values=values,
                               autocast_dtype=autocast_dtype, grad_clip=cfg.optim.grad_clip)
            pooled_targets = terms.pop("target_pooled")
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            pending += 1
            done = step + 1
            # decided identically on every rank: a log step runs a collective reduce; only rank 0 scores
            monitor_now = cfg.probe.monitor_every > 0 and done % cfg.probe.monitor_every == 0
            log_now = done % cfg.train.log_every == 0 or done == total or monitor_now
            stopping = progress.vote(stop["signal"])
            save_now = done % cfg.train.ckpt_every == 0 or done == total or stopping
            if log_now or save_now:
                keys = sorted(sums)
                means = accelerator.reduce(torch.stack([sums[k] for k in keys]) / pending, "mean").tolist()
                record = dict(zip(keys, means))
                if not all(math.isfinite(v) for v in means):
                    raise NonFiniteLoss(
                        f"loss became non-finite ({record}) between steps {done - pending} and {done}; "
                        f"the last good checkpoint (step {last_good}) is kept at {ckpt_path}. Lower optim.lr, "
                        "set optim.grad_clip, or train in fp32 (train.precision=fp32)."
                    )
                now = time.perf_counter()
                record.update(
                    step=done, lr=values.lr, weight_decay=values.weight_decay, momentum=values.momentum,
                    target_std=float(feature_std(pooled_targets)), effective_rank=float(effective_rank(pooled_targets)),
                    images_per_s=round(pending * cfg.data.batch_size / (now - interval_start), 1),
                    skipped_samples=skipped, restarts=progress.restarts,
                )
                if monitor_now and monitor is not None:
                    record["monitor_knn_top1"] = monitor(core.target_encoder)
                if main:
                    writer.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{values.lr:.2e}",
                                    img_s=f"{record['images_per_s']:.0f}", rank=f"{record['effective_rank']:.1f}")
                sums, pending, interval_start = {}, 0, now
            bar.update(1)
            if save_now:
                if not all_finite(core):
                    raise NonFiniteLoss(
                        f"parameters became non-finite by step {done}; the last good checkpoint "
                        f"(step {last_good}) is kept at {ckpt_path}"
                    )
                if accelerator.num_processes > 1:
                    check_replicas_agree({"encoder": core.encoder, "target_encoder": core.target_encoder,
                                          "predictor": core.predictor}, accelerator.gather)
                if main:
                    save_checkpoint(checkpoint_state(core, optimizer, done, cfg, restarts=progress.restarts),
                                    ckpt_path)
                accelerator.wait_for_everyone()
                last_good = done
            if stopping:
                bar.close()
                name = signal.Signals(stopping).name
                raise TrainingStopped(
                    f"stopped by {name} at step {done}; checkpoint saved to {ckpt_path}. "
                    f"Run again with run_dir={ckpt_path.parent} to resume.",
                    signal_name=name,
                )
    bar.close()


def probe_summary(cfg: Config, model: JEPA, device: torch.device, autocast_dtype: torch.dtype | None) -> dict[str, Any]:
    """Linear probe on the test split: the frozen target encoder, the same architecture at random init,
    and a baseline without learned features (raw pixels for images, per-frame features for video)."""
    torch.manual_seed(cfg.seed + 1)
    random_encoder = build_encoder(cfg).to(device).eval()
    target = model.target_encoder.eval()
    train_set, test_set = probe_datasets(cfg)
    if is_video(cfg):
        name, key, features = "per-frame features", "per_frame_probe_accuracy", per_frame_pooled(target)
    else:
        name, key, features = "raw pixels", "raw_pixel_probe_accuracy", raw_pixels
    print(f"linear probe on frozen features (target encoder, random-init encoder, {name}) ...", flush=True)
    results = probe_features(
        {"target_encoder": pooled(target), "random_init": pooled(random_encoder), name: features},
        train_set, test_set, batch_size=cfg.probe.batch_size, device=device, epochs=cfg.probe.epochs,
        seed=cfg.seed, autocast_dtype=autocast_dtype,
    )
    summary = {
        "probe_accuracy": results["target_encoder"]["test_accuracy"],
        "random_init_probe_accuracy": results["random_init"]["test_accuracy"],
        key: results[name]["test_accuracy"],
        "probe": results,
    }
    print(
        f"linear probe test accuracy: pretrained {summary['probe_accuracy']:.4f} | "
        f"random init {summary['random_init_probe_accuracy']:.4f} | {name} {summary[key]:.4f}",
        flush=True,
    )
    return summary
