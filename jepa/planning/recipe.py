"""The two-rooms planning recipe, stage by stage; each stage skips itself when its output exists (resumable).

collect (trajectory shards) -> pretrain (JEPA on the frames, through jepa.train) -> features (frozen,
layer-normed, pooled, every ``frameskip`` steps) -> world_model (predictor ensemble, checkpointed and
resumable) -> evaluate (planning success with the learned and the oracle model, GIF, rollout error).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from jepa.allocator import keep_freed_memory
from jepa.build import build_encoder
from jepa.checkpoint import CheckpointError, load_checkpoint, load_matching, save_checkpoint
from jepa.config import PlanConfig, from_dict, plan_config_from_dict, to_dict
from jepa.models.ac_predictor import ACPredictor, ac_losses
from jepa.models.grid_predictor import GridACPredictor
from jepa.planning import trajectories as T
from jepa.planning.world_model import FrameEncoder, LatentWorldModel
from jepa.precision import resolve_precision
from jepa.single_threaded import run_single_threaded

WORLD_MODEL = "world_model.pt"
# Layout of world_model.pt. 2: predictors with rotary frame positions and a sliding window (no ``frame_pos``);
# the unversioned files before it held absolute per-slot frame positions, which this code cannot run.
WORLD_MODEL_FORMAT = 2


def stage_collect(cfg: PlanConfig, run_dir: Path) -> Path:
    out = run_dir / "data"
    if (out / "manifest.json").is_file():
        print(f"collect: {out} exists, skipped", flush=True)
        return out
    start = time.perf_counter()
    c = cfg.collect
    explore = T.ExplorationConfig(kappa=c.kappa, door_fraction=c.door_fraction, held_fraction=c.held_fraction,
                                  contact_fraction=c.contact_fraction, outer_contact_fraction=c.outer_contact_fraction,
                                  hold=c.hold, held_bound=cfg.planner.action_bound)
    manifest = T.write_exploration(out, num=c.num_trajectories, steps=c.steps, seed=cfg.seed, cfg=explore,
                                   shard_size=c.shard_size, overwrite=True)
    print(f"collect: {manifest['num_samples']} trajectories of {c.steps} steps in {len(manifest['shards'])} shards "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return out


def stage_pretrain(cfg: PlanConfig, run_dir: Path, data: Path) -> Path:
    from jepa.train import train

    pre = cfg.pretrain
    pre.run_dir, pre.data.source, pre.data.root = str(run_dir / "encoder"), "trajectories", str(data)
    pre.seed = cfg.seed
    train(pre)
    return Path(pre.run_dir) / "checkpoint.pt"


def load_frame_encoder(encoder_ckpt: dict[str, Any], *, pool: int) -> FrameEncoder:
    """The frozen target encoder of a pretraining checkpoint, with its data normalisation."""
    pre = from_dict(encoder_ckpt["config"])
    encoder = build_encoder(pre)
    load_matching(encoder, encoder_ckpt["target_encoder"], "encoder checkpoint [target_encoder]")
    norm = encoder_ckpt["normalisation"]
    return FrameEncoder(encoder, mean=norm["mean"], std=norm["std"], img_size=pre.data.img_size, pool=pool)


def encoder_state(ckpt_path: Path, data: Path) -> dict[str, Any]:
    """What the world model keeps of the pretraining run: config, target encoder, frame normalisation."""
    state = load_checkpoint(ckpt_path)
    _, _, mean, std = T.trajectory_frames(data)
    return {"config": state["config"], "target_encoder": state["target_encoder"],
            "normalisation": {"mean": list(mean), "std": list(std)}}


@torch.no_grad()
def encode_trajectories(encoder: FrameEncoder, trajs: list[T.Trajectory], frameskip: int,
                        batch: int = 256) -> dict[str, torch.Tensor]:
    """Features every ``frameskip`` steps [N, F, tokens, D], chunked actions [N, F - 1, frameskip * A], positions."""
    frames_needed = (trajs[0].actions.shape[0] // frameskip) + 1
    idx = np.arange(frames_needed) * frameskip
    frames = torch.from_numpy(np.stack([t.frames[idx] for t in trajs]))  # [N, F, C, H, W]
    flat = frames.flatten(0, 1).float() / 255
    feats = torch.cat([encoder(flat[i: i + batch]) for i in range(0, len(flat), batch)])
    feats = feats.view(len(trajs), frames_needed, *feats.shape[1:])
    actions = torch.from_numpy(np.stack([t.actions[: (frames_needed - 1) * frameskip] for t in trajs]))
    actions = actions.view(len(trajs), frames_needed - 1, -1)
    positions = torch.from_numpy(np.stack([t.state[idx] for t in trajs]))
    return {"features": feats, "actions": actions, "positions": positions}


def build_predictor(cfg: PlanConfig, encoder: FrameEncoder, action_dim: int) -> ACPredictor | GridACPredictor:
    w = cfg.world_model
    sizes = dict(feature_dim=encoder.dim, action_dim=action_dim * w.frameskip, num_tokens=encoder.num_tokens)
    if w.predictor == "grid":
        return GridACPredictor(**sizes, width=w.grid.width, depth=w.grid.depth, kernel=w.grid.kernel,
                               dilation=w.grid.dilation)
    return ACPredictor(**sizes, embed_dim=w.embed_dim, depth=w.depth, num_heads=w.num_heads, max_frames=w.window)


def load_world_model_state(path: Path) -> dict[str, Any]:
    """A world_model.pt of this code's format; an older layout is a clear error, never a silent wrong load."""
    state = load_checkpoint(path)
    if "predictors" not in state or "encoder" not in state:
        raise CheckpointError(f"{path} is not a world-model checkpoint (no predictors/encoder)")
    found = state.get("format", 1)
    if found != WORLD_MODEL_FORMAT:
        raise CheckpointError(
            f"{path} has world-model format {found}, this code reads format {WORLD_MODEL_FORMAT} (predictors with "
            "rotary frame positions replaced absolute per-slot ones); delete it and rerun the recipe to retrain the "
            "world model stage (the encoder and collected data are reused)")
    return state


def train_predictors(cfg: PlanConfig, data: dict[str, torch.Tensor], encoder: FrameEncoder, path: Path,
                     enc_state: dict[str, Any], state: dict[str, Any] | None = None) -> list[ACPredictor]:
    """Train ``world_model.ensemble`` predictors (different seeds and batches), checkpointing to ``path``;
    ``state``: the partly trained world model read from ``path`` (see :func:`load_world_model_state`), to resume."""
    w = cfg.world_model
    feats, actions = data["features"], data["actions"]
    n, frames = feats.shape[:2]
    span = w.window + 1
    if frames < span:
        raise ValueError(f"trajectories give {frames} feature frames; the predictor needs window + 1 = {span}")
    predictors, optimizers = [], []
    for m in range(w.ensemble):
        torch.manual_seed(cfg.seed * 100 + m)
        p = build_predictor(cfg, encoder, actions.shape[-1] // w.frameskip)
        opt = torch.optim.AdamW(p.parameters(), lr=w.lr, weight_decay=w.weight_decay)
        if state is not None:
            load_matching(p, state["predictors"][m], f"{path} [predictor {m}]")
            opt.load_state_dict(state["optimizers"][m])
        predictors.append(p.train())
        optimizers.append(opt)
    start = int(state["step"]) if state else 0
    # convolutions and linears in bf16; the residual stream and the losses stay fp32 (the step adds the
    # predicted change to its fp32 input)
    dtype = resolve_precision(w.precision, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(cfg.seed * 1000 + m + 7919 * start) for m in range(w.ensemble)]
    # members are independent: with several torch threads each trains on its own single-threaded worker
    workers = min(w.ensemble, torch.get_num_threads())
    log = path.with_name("world_model_metrics.jsonl")
    t0 = time.perf_counter()

    def member_step(m: int, lr: float) -> dict[str, torch.Tensor]:
        p, opt, g = predictors[m], optimizers[m], gens[m]
        for group in opt.param_groups:
            group["lr"] = lr
        traj = torch.randint(n, (w.batch_size,), generator=g)
        offset = torch.randint(frames - span + 1, (w.batch_size,), generator=g)
        steps = offset.view(-1, 1) + torch.arange(span)
        f = feats[traj.view(-1, 1), steps].float()
        a = actions[traj.view(-1, 1), steps[:, :-1]]
        with torch.autocast("cpu", dtype=dtype) if dtype else nullcontext():
            terms = ac_losses(p, f, a, w.rollout_steps, w.change_weight, w.drift_weight)
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()
        return {k: v.detach() for k, v in terms.items()}

    for step in range(start, w.steps):
        lr = float(w.lr * 0.5 * (1 + np.cos(np.pi * step / w.steps)))
        tasks = [lambda m=m: member_step(m, lr) for m in range(w.ensemble)]
        if workers > 1:
            member_terms = run_single_threaded(tasks, workers, flush_denormal=True)
        else:
            member_terms = [task() for task in tasks]
        done = step + 1
        if done % w.log_every == 0 or done == w.steps:
            records = {k: sum(t[k] for t in member_terms) / w.ensemble for k in member_terms[0]}
            rec = {"step": done, "lr": lr, **{k: float(v) for k, v in records.items()},
                   "seconds": round(time.perf_counter() - t0, 1)}
            with log.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"world model step {done}/{w.steps}: " + " ".join(f"{k}={v:.4f}" for k, v in rec.items()
                                                                  if k.endswith("loss")), flush=True)
            save_checkpoint({"format": WORLD_MODEL_FORMAT, "step": done, "plan_config": to_dict(cfg),
                             "encoder": enc_state, "predictors": [p.state_dict() for p in predictors],
                             "optimizers": [o.state_dict() for o in optimizers]}, path)
    return [p.eval() for p in predictors]


def load_world_model(run_dir: str | Path) -> tuple[LatentWorldModel, PlanConfig]:
    """The planning world model saved by the recipe in ``run_dir`` (or a world_model.pt path)."""
    path = Path(run_dir)
    path = path / WORLD_MODEL if path.is_dir() else path
    state = load_world_model_state(path)
    cfg = plan_config_from_dict(state["plan_config"])
    encoder = load_frame_encoder(state["encoder"], pool=cfg.world_model.pool)
    predictors = []
    for m, weights in enumerate(state["predictors"]):
        p = build_predictor(cfg, encoder, 2)
        own = p.state_dict()
        wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
        if wrong:
            raise CheckpointError(f"{path}: predictor {m} does not match the encoder ({encoder.num_tokens} tokens of "
                                  f"{encoder.dim} features): {wrong[0]} is {tuple(weights[wrong[0]].shape)}, "
                                  f"expected {tuple(own[wrong[0]].shape)}")
        load_matching(p, weights, f"{path} [predictor {m}]")
        predictors.append(p)
    return LatentWorldModel(encoder, predictors, frameskip=cfg.world_model.frameskip), cfg


def run_recipe(cfg: PlanConfig) -> dict[str, Any]:
    """All stages in ``cfg.run_dir``; returns the evaluation summary."""
    from eval.planning import evaluate_run

    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir or f"runs/plan-{time.strftime('%Y%m%d-%H%M%S')}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir = str(run_dir)
    (run_dir / "plan.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = stage_collect(cfg, run_dir)
    timings["collect_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ckpt = stage_pretrain(cfg, run_dir, data)
    timings["pretrain_s"] = time.perf_counter() - t
    t = time.perf_counter()
    keep_freed_memory()  # the grid predictor's training and rollouts reallocate the same tensors (jepa.allocator)
    # Late in training the predictor's backward pass makes denormal gradients, each a slow microcode assist on
    # x86: without flushing them to zero its step slows from 190 to 270-340 ms (README)
    torch.set_flush_denormal(True)
    wm_path = run_dir / WORLD_MODEL
    wm_state = load_world_model_state(wm_path) if wm_path.is_file() else None
    if wm_state is not None and int(wm_state["step"]) >= cfg.world_model.steps:
        print(f"world model: {wm_path} complete, skipped", flush=True)
    else:
        enc_state = encoder_state(ckpt, data)
        encoder = load_frame_encoder(enc_state, pool=cfg.world_model.pool)
        feats_path = run_dir / "features.pt"
        if feats_path.is_file():
            feats = torch.load(feats_path, weights_only=True)
        else:
            feats = encode_trajectories(encoder, list(T.read_trajectories(data)), cfg.world_model.frameskip)
            save_checkpoint(feats, feats_path)
        train_predictors(cfg, feats, encoder, wm_path, enc_state, wm_state)
    timings["world_model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = evaluate_run(run_dir, episodes_file=cfg.eval.episodes, seed=cfg.eval.seed, n=cfg.eval.n, oracle=True)
    timings["evaluate_s"] = time.perf_counter() - t
    summary["stage_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    (run_dir / "plan_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
