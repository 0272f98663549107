"""Planning success on two-rooms with a learned world model (and the oracle model side by side).

    python -m eval.planning --checkpoint RUN [--episodes FILE.json | --seed S --n 20] [--oracle]
    python -m eval.planning --oracle-only [--episodes FILE.json | --seed S --n 20]

Prints one JSON line last: success_rate, mean_final_distance, seconds_per_step (planning seconds per
replanning step) and the full budget; writes results.json, a GIF of the first episode, and the
rollout error against horizon (latent L1 and a linear position probe on predicted features) as JSON
and a plot, in ``--out`` (default: RUN/eval).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa.allocator import keep_freed_memory
from jepa.config import PlannerConfig, validate_planner
from jepa.planning.envs import two_rooms as tr
from jepa.planning.oracle import OracleWorldModel
from jepa.planning.planners import (
    CEM, MPPI, PlanningAgent, StateCost, WorldModel, final_distance, summed_distance,
)
from jepa.planning.world_model import LatentWorldModel, latent_cost
from jepa.precision import resolve_precision


def resolve_episodes(episodes_file: str | None, seed: int | None, n: int) -> tuple[list[tr.Episode], str]:
    if episodes_file is not None and seed is not None:
        raise ValueError("give either an episodes file or --seed/--n, not both")
    if seed is not None:
        return tr.episodes_from_seed(seed, n), f"reset(seed={seed} + i), i < {n}"
    if episodes_file is not None:
        return tr.load_episodes(episodes_file), episodes_file
    return tr.load_episodes(), "pinned two_rooms_20.json"


def build_planner(p: PlannerConfig, action_dim: int = 2):
    """``p``'s planner, its samples split across the threads torch was given (``--threads``)."""
    common = dict(horizon=p.horizon, action_dim=action_dim, low=-p.action_bound, high=p.action_bound,
                  samples=p.samples, iterations=p.iterations, elites=p.elites, init_std=p.init_std,
                  repeat=p.repeat, seed=p.seed, workers=torch.get_num_threads())
    return MPPI(temperature=p.temperature, **common) if p.kind == "mppi" else CEM(**common)


def budget(p: PlannerConfig) -> dict[str, Any]:
    return {"planner": p.kind, "samples": p.samples, "iterations": p.iterations, "elites": p.elites,
            "horizon": p.horizon, "replan_every": p.replan_every, "repeat": p.repeat,
            "steps": tr.MAX_STEPS, "cost": p.cost, "until_episode_end": p.until_episode_end,
            "init_std": p.init_std, "action_bound": p.action_bound, "disagreement": p.disagreement,
            "blur": list(p.blur), "stuck_horizon": p.stuck_horizon, "stuck_margin": p.stuck_margin,
            "check_progress": p.check_progress, "stall_penalty": p.stall_penalty, "precision": p.precision}


def imagined_in(model: LatentWorldModel, p: PlannerConfig) -> str:
    """The dtype ``p.precision`` resolves to for the learned model on this machine ('bf16' or 'fp32')."""
    return "bf16" if resolve_precision(p.precision, model.encoder.mean.device) == torch.bfloat16 else "fp32"


def play(agent: PlanningAgent, episode: tr.Episode, *, record: bool = False) -> dict[str, Any]:
    """One episode of ``MAX_STEPS`` steps; success is judged on the final position."""
    env = tr.TwoRoomsEnv()
    obs = env.reset_to(episode)
    agent.reset(env.goal_observation())
    frames = [env.render()] if record else []
    while not env.done:
        obs = env.step(agent.act(obs))
        if record:
            frames.append(env.render())
    return {"success": env.success, "final_distance": env.distance_to_goal,
            "plan_seconds": list(agent.plan_seconds), "escalations": agent.escalations, "frames": frames}


def evaluate_agent(make_agent: Callable[[], PlanningAgent], episodes: list[tr.Episode], *, name: str,
                   gif: Path | None) -> dict[str, Any]:
    results = []
    for i, episode in enumerate(episodes):
        r = play(make_agent(), episode, record=gif is not None and i == 0)
        if r["frames"]:
            tr.save_gif(r["frames"][::2], gif)
        results.append(r)
        print(f"{name} episode {i + 1}/{len(episodes)}: success={r['success']} "
              f"final_distance={r['final_distance']:.2f}", file=sys.stderr, flush=True)
    seconds = [s for r in results for s in r["plan_seconds"]]
    return {
        "success_rate": float(np.mean([r["success"] for r in results])),
        "successes": int(sum(r["success"] for r in results)),
        "episodes": len(results),
        "mean_final_distance": float(np.mean([r["final_distance"] for r in results])),
        "seconds_per_step": float(np.median(seconds)),
        "mean_seconds_per_step": float(np.mean(seconds)),
        "final_distances": [round(r["final_distance"], 2) for r in results],
        "stuck_replans": int(sum(r["escalations"] for r in results)),
        "planning_calls": len(seconds),
    }


def planning_agent(model: WorldModel, cost: StateCost, p: PlannerConfig) -> PlanningAgent:
    """An agent with ``p``'s planner, replanning interval, episode countdown, longer look when stuck and
    stall memory; final-state costs ask the model for the last state only."""
    validate_planner(p)
    further = build_planner(dataclasses.replace(p, horizon=p.stuck_horizon)) if p.stuck_horizon else None
    return PlanningAgent(model, build_planner(p), cost, replan_every=p.replan_every,
                         episode_steps=tr.MAX_STEPS if p.until_episode_end else None, final_only=p.cost == "final",
                         further=further, stuck_margin=p.stuck_margin, check_progress=p.check_progress,
                         stall_penalty=p.stall_penalty)


def oracle_agent(p: PlannerConfig) -> PlanningAgent:
    return planning_agent(OracleWorldModel(), final_distance(2) if p.cost == "final" else summed_distance(2), p)


def learned_agent(model: LatentWorldModel, p: PlannerConfig) -> PlanningAgent:
    """The planner on the learned model, imagining in ``p.precision``."""
    dtype = resolve_precision(p.precision, model.encoder.mean.device)
    return planning_agent(model.with_autocast(dtype), latent_cost(p.cost, p.disagreement, p.blur), p)


@torch.no_grad()
def position_probe(model, *, num: int = 3000, seed: int = 999, ridge: float = 1e-2
                   ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ridge regression from features [..., N, D] to the dot's (x, y): where a prediction puts the dot.

    Fit on ``num`` true frames with the dot anywhere free, walls included (a probe fit on exploration
    frames alone is underdetermined: 10 000 feature dimensions), in the dual form (num x num)."""
    rng = np.random.default_rng(seed)
    layouts = [tr.draw_episode(rng).layout for _ in range(num)]
    points = []
    for layout in layouts:
        while not tr.is_free(point := rng.uniform(tr.FREE_LO, tr.FREE_HI, 2), layout):
            pass
        points.append(point)
    pos = torch.from_numpy(np.stack(points))
    wall_x, door_y = tr.layout_tensors(layouts)
    feats = torch.cat([model.encode(tr.observe(pos[i:i + 500], wall_x[i:i + 500], door_y[i:i + 500]))
                       for i in range(0, num, 500)]).flatten(1).double()
    mean = feats.mean(0)
    x = feats - mean
    alpha = torch.linalg.solve(x @ x.T + ridge * torch.eye(num, dtype=x.dtype), pos - pos.mean(0))
    w, bias = x.T @ alpha, pos.mean(0)

    def probe(f: torch.Tensor) -> torch.Tensor:
        return (f.flatten(-2).double() - mean) @ w + bias

    return probe


@dataclasses.dataclass(frozen=True)
class ContactStates:
    """Dot positions [B, 2] touching walls, and per axis the direction into the wall touched (0: free)."""

    start: torch.Tensor
    into: torch.Tensor
    wall_x: torch.Tensor
    door_y: torch.Tensor


def _drawn_episodes(rng: np.random.Generator, num: int) -> tuple[torch.Tensor, ...]:
    """Starts [num, 2], wall x, door y and room side (-1 left, +1 right) of ``num`` drawn episodes."""
    episodes = [tr.draw_episode(rng) for _ in range(num)]
    wall_x, door_y = tr.layout_tensors([e.layout for e in episodes])
    side = torch.tensor([float(tr.room_of(e.start[0], e.layout)) for e in episodes], dtype=torch.float64)
    return torch.tensor([e.start for e in episodes], dtype=torch.float64), wall_x, door_y, side


def inner_wall_states(rng: np.random.Generator, num: int) -> ContactStates:
    """The dot touching the inner wall at a random height, at least 3 px from the door."""
    _, wall_x, door_y, side = _drawn_episodes(rng, num)
    y = torch.from_numpy(rng.uniform(tr.FREE_LO, tr.FREE_HI, num))
    blocked = (y - door_y).abs() < tr.DOOR_HALF_HEIGHT + 3
    while blocked.any():
        y[blocked] = torch.from_numpy(rng.uniform(tr.FREE_LO, tr.FREE_HI, int(blocked.sum())))
        blocked = (y - door_y).abs() < tr.DOOR_HALF_HEIGHT + 3
    start = torch.stack([wall_x + side * tr.WALL_HALF_WIDTH, y], dim=1)
    return ContactStates(start, torch.stack([-side, torch.zeros(num, dtype=torch.float64)], 1), wall_x, door_y)


def corner_states(rng: np.random.Generator, num: int) -> ContactStates:
    """The dot in a corner of the inner wall and the top or bottom wall, where a goal behind the wall traps it."""
    _, wall_x, door_y, side = _drawn_episodes(rng, num)
    up = torch.from_numpy(rng.random(num) < 0.5)
    start = torch.stack([wall_x + side * tr.WALL_HALF_WIDTH,
                         torch.where(up, tr.FREE_LO, tr.FREE_HI).double()], dim=1)
    return ContactStates(start, torch.stack([-side, torch.where(up, -1.0, 1.0).double()], 1), wall_x, door_y)


def outer_wall_states(rng: np.random.Generator, num: int) -> ContactStates:
    """The dot touching one of the four outer walls (drawn uniformly), elsewhere at its episode start."""
    start, wall_x, door_y, _ = _drawn_episodes(rng, num)
    which = torch.from_numpy(rng.integers(0, 4, num))  # 0 top, 1 bottom, 2 left, 3 right
    zero = torch.zeros(num, dtype=torch.float64)
    start[:, 1] = torch.where(which == 0, tr.FREE_LO, torch.where(which == 1, tr.FREE_HI, start[:, 1]))
    start[:, 0] = torch.where(which == 2, tr.FREE_LO, torch.where(which == 3, tr.FREE_HI, start[:, 0]))
    into = torch.stack([torch.where(which == 2, -1.0, torch.where(which == 3, 1.0, zero)),
                        torch.where(which == 0, -1.0, torch.where(which == 1, 1.0, zero))], dim=1)
    return ContactStates(start, into, wall_x, door_y)


@torch.no_grad()
def contact_error(model, probe: Callable[[torch.Tensor], torch.Tensor], frameskip: int, bound: float,
                  states: ContactStates, rng: np.random.Generator, *, chunks: int = 3) -> dict[str, Any]:
    """How far the model imagines a dot that touches walls to move when pushed into them.

    In two-rooms a move with any component into a wall it touches is stopped whole, so the true answer
    is "not at all". A model that imagines a slide or a leak through the wall here hands a sampling planner
    plans that look good and go nowhere; on the learned model's failed episodes that is where the agent
    ends (README). Actions are the planner's kind (uniform in the bound, held ``chunks`` predictor steps),
    each component along ``states.into`` pointing into its wall. ``imagined_through_wall``: how often the
    imagined dot is on the other side of the inner wall from where it is."""
    start, wall_x, door_y = states.start, states.wall_x, states.door_y
    knots = torch.from_numpy(rng.uniform(-bound, bound, (len(start), 2)))
    knots = torch.where(states.into != 0, states.into * knots.abs(), knots)
    steps = chunks * frameskip
    pos, real = start, []
    for t in range(steps):
        pos = tr.move(pos, knots, wall_x, door_y)
        if (t + 1) % frameskip == 0:
            real.append(pos)
    real = torch.stack(real, 1)  # [B, chunks, 2]: the dot has not moved
    feats = model.encode(tr.observe(start, wall_x, door_y))
    chunked = knots.float().unsqueeze(1).repeat(1, chunks, frameskip)  # [B, chunks, frameskip * 2]
    imagined = probe(torch.stack([p.rollout(feats.unsqueeze(1), chunked) for p in model.predictors]).mean(0))
    floor = (probe(feats) - start).norm(dim=-1).mean()
    side = torch.sign(start[:, 0] - wall_x).unsqueeze(1)
    through = torch.sign(imagined[..., 0] - wall_x.unsqueeze(1)) != side
    return {"chunks": list(range(1, chunks + 1)),
            "imagined_move_px": [round(float(v), 2) for v in (imagined - real).norm(dim=-1).mean(0)],
            "imagined_through_wall": [round(float(v), 3) for v in through.double().mean(0)],
            "probe_floor_px": round(float(floor), 2)}


CONTACTS = {"wall_contact": inner_wall_states, "corner_contact": corner_states, "outer_contact": outer_wall_states}


def contact_errors(model, probe: Callable[[torch.Tensor], torch.Tensor], frameskip: int, bound: float, *,
                   num: int = 256, seed: int = 4321) -> dict[str, dict[str, Any]]:
    """:func:`contact_error` touching the inner wall, in its corners with the top and bottom walls, and
    touching an outer wall: ``num`` states each, each kind from its own seeded draw."""
    out = {}
    for i, (name, states) in enumerate(CONTACTS.items()):
        rng = np.random.default_rng(seed + i)
        out[name] = contact_error(model, probe, frameskip, bound, states(rng, num), rng)
    return out


@torch.no_grad()
def rollout_error(model, frameskip: int, max_horizon: int, out_dir: Path, *, bound: float, num: int = 48,
                  seed: int = 12345) -> dict[str, Any]:
    """Latent L1 and position-probe error (px) of open-loop predictions at horizons 1..max_horizon
    (predictor steps of ``frameskip`` environment steps) on fresh exploration trajectories, and the
    model's error where the dot touches the wall (:func:`contact_error`, actions within ``bound``).

    The position probe (:func:`position_probe`) is fit on other frames; its error on the true
    features of the rolled-out trajectories is the floor."""
    from jepa.planning.recipe import encode_trajectories
    from jepa.planning.trajectories import exploration_batch

    trajs = exploration_batch(np.random.default_rng(seed), num, max_horizon * frameskip)
    data = encode_trajectories(model.encoder, trajs, frameskip)
    feats, actions, pos = data["features"], data["actions"], data["positions"].double()
    probe = position_probe(model)
    start = feats[:, :1].float()
    preds = torch.stack([p.rollout(start, actions) for p in model.predictors]).mean(0)  # [B, H, N, D]
    latent = (preds - feats[:, 1:]).abs().mean(dim=(0, 2, 3))
    pos_err = (probe(preds) - pos[:, 1:]).norm(dim=-1).mean(0)
    floor = (probe(feats[:, 1:]) - pos[:, 1:]).norm(dim=-1).mean(0)
    copy = (feats[:, :1] - feats[:, 1:]).abs().mean(dim=(0, 2, 3))  # predicting "nothing moves"
    result = {"horizon": list(range(1, max_horizon + 1)), "env_steps_per_horizon": frameskip,
              "latent_l1": [round(float(v), 4) for v in latent],
              "latent_l1_copy_last": [round(float(v), 4) for v in copy],
              "position_error_px": [round(float(v), 2) for v in pos_err],
              "probe_floor_px": [round(float(v), 2) for v in floor],
              **contact_errors(model, probe, frameskip, bound)}
    (out_dir / "rollout_error.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_rollout_error(result, out_dir / "rollout_error.png")
    return result


def plot_rollout_error(result: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = result["horizon"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [3, 3, 2]})
    axes[0].plot(h, result["latent_l1"], label="predicted")
    axes[0].plot(h, result["latent_l1_copy_last"], "--", label="copy start frame")
    axes[0].set_title("latent L1 error")
    axes[1].plot(h, result["position_error_px"], label="probe on predicted")
    axes[1].plot(h, result["probe_floor_px"], "--", label="probe on true")
    axes[1].set_title("position error (px)")
    for ax in axes[:2]:
        ax.set_xlabel(f"horizon (predictor steps of {result['env_steps_per_horizon']} env steps)")
    names = [name for name in CONTACTS if name in result]
    for i, name in enumerate(names):
        contact = result[name]
        x = np.array(contact["chunks"]) + (i - (len(names) - 1) / 2) * 0.8 / len(names)
        axes[2].bar(x, contact["imagined_move_px"], width=0.8 / len(names), label=name.replace("_", " "))
    axes[2].axhline(max(result[name]["probe_floor_px"] for name in names), color="k", ls="--", lw=1,
                    label="probe on true")
    axes[2].set_title("imagined move pushed into walls (px, truth 0)")
    axes[2].set_xlabel("predictor steps")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def evaluate_run(run_dir: str | Path | None, *, episodes_file: str | None = None, seed: int | None = None,
                 n: int = 20, oracle: bool = True, planner: PlannerConfig | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Any]:
    """Learned-model planning on a recipe run (``run_dir``; None: oracle only), the oracle alongside."""
    episodes, source = resolve_episodes(episodes_file, seed, n)
    summary: dict[str, Any] = {"episodes_source": source}
    if run_dir is not None:
        from jepa.planning.recipe import load_world_model

        model, cfg = load_world_model(run_dir)
        p = planner or cfg.planner
        out = Path(out_dir or Path(run_dir) / "eval")
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        learned = evaluate_agent(lambda: learned_agent(model, p), episodes, name="learned",
                                 gif=out / "episode.gif" if cfg.eval.gif else None)
        learned["wall_seconds"] = round(time.perf_counter() - start, 1)
        curve = rollout_error(model, cfg.world_model.frameskip, cfg.eval.max_horizon, out, bound=p.action_bound)
        summary.update(learned)
        summary["ensemble"] = len(model.predictors)
        summary["imagined_in"] = imagined_in(model, p)
        summary["rollout_error"] = {k: curve[k] for k in ("position_error_px", "latent_l1", *CONTACTS)}
    else:
        p = planner or PlannerConfig()
        out = Path(out_dir or "runs/eval-oracle")
        out.mkdir(parents=True, exist_ok=True)
    if oracle:
        start = time.perf_counter()
        orc = evaluate_agent(lambda: oracle_agent(p), episodes, name="oracle",
                             gif=out / "oracle_episode.gif" if run_dir is None else None)
        orc["wall_seconds"] = round(time.perf_counter() - start, 1)
        summary["oracle"] = orc
        if run_dir is None:
            summary.update({k: orc[k] for k in ("success_rate", "mean_final_distance", "seconds_per_step")})
    summary["budget"] = budget(p)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.planning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a planning recipe run folder (or its world_model.pt)")
    parser.add_argument("--oracle-only", action="store_true", help="plan with the environment's physics only")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle comparison")
    parser.add_argument("--episodes", help="JSON list of {wall_x, door_y, start, goal}")
    parser.add_argument("--seed", type=int, help="draw episodes with reset(seed + i)")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--out", help="output folder (default RUN/eval, or runs/eval-oracle)")
    parser.add_argument("--threads", type=int, default=1)
    for f in dataclasses.fields(PlannerConfig):
        flag = "planner-seed" if f.name == "seed" else f.name.replace("_", "-")
        parser.add_argument(f"--{flag}", dest=f"planner_{f.name}", default=None,
                            help=f"planner.{f.name} (default: the run's config)")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != args.oracle_only:
        parser.error("give --checkpoint RUN, or --oracle-only")
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.set_flush_denormal(True)  # as the recipe does (jepa.planning.recipe)
    overrides = [f"{f.name}={getattr(args, 'planner_' + f.name)}" for f in dataclasses.fields(PlannerConfig)
                 if getattr(args, "planner_" + f.name) is not None]
    planner = None
    if overrides:
        from jepa.config import parse_override, update_from_dict

        if args.checkpoint:
            from jepa.planning.recipe import load_world_model

            planner = load_world_model(args.checkpoint)[1].planner
        else:
            planner = PlannerConfig()
        for o in overrides:
            update_from_dict(planner, parse_override(o))
    try:
        summary = evaluate_run(args.checkpoint, episodes_file=args.episodes, seed=args.seed, n=args.n,
                               oracle=not args.no_oracle, planner=planner, out_dir=args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"eval.planning: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
