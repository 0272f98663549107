"""Planning speed: seconds per replanning step (one planner call: encode the start, then iterations x one
batched rollout of every sample) with the recipe's learned world model and with the oracle.

    python -m benchmarks.planner                         # reference budget (200 x 20, horizon 90) and horizon 16
    python -m benchmarks.planner --checkpoint RUN        # a trained recipe run instead of random weights
    python -m benchmarks.planner --precision fp32        # the learned model imagining in fp32 (default: auto)
    python -m benchmarks.planner --smoke                 # seconds, for CI

Timing does not depend on the weights, so without a checkpoint the recipe's architecture
(configs/plan/two_rooms.yaml) is built at random init. Prints ONE JSON line: per budget, the median
and p90 over ``--calls`` calls (after one warm-up call), wall clock, and the median CPU time of the
process (with one thread, what a call costs when no other job competes for the core).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.report import device_name
from jepa.allocator import keep_freed_memory
from jepa.build import build_encoder
from jepa.config import PlanConfig, load_plan_config
from jepa.planning.envs import two_rooms as tr
from jepa.planning.recipe import build_predictor, load_world_model
from jepa.planning.world_model import FrameEncoder, LatentWorldModel

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "plan" / "two_rooms.yaml"


def random_world_model(config: str | Path) -> tuple[LatentWorldModel, PlanConfig]:
    cfg = load_plan_config(config)
    torch.manual_seed(0)
    encoder = FrameEncoder(build_encoder(cfg.pretrain), mean=(0.0, 0.0), std=(1.0, 1.0),
                           img_size=cfg.pretrain.data.img_size, pool=cfg.world_model.pool)
    predictors = [build_predictor(cfg, encoder, 2) for _ in range(cfg.world_model.ensemble)]
    return LatentWorldModel(encoder, predictors, frameskip=cfg.world_model.frameskip), cfg


def time_calls(agent_factory, calls: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``calls`` planning calls (each from a fresh agent, so none is warm-started),
    after a warm-up."""
    env = tr.TwoRoomsEnv()
    obs = env.reset(seed=0)
    goal = env.goal_observation()
    wall, cpu = [], []
    for i in range(calls + 1):
        agent = agent_factory()
        agent.reset(goal)
        start, start_cpu = time.perf_counter(), time.process_time()
        agent.act(obs)
        if i:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.planner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--config", default=str(RECIPE))
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--horizons", type=int, nargs="+", default=[90, 16])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                        help="the dtype the learned model imagines in (default: the config's planner.precision)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.iterations, args.horizons, args.calls = 16, 2, [10], 1
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    torch.set_flush_denormal(True)  # as the recipe and eval.planning do
    from eval.planning import imagined_in, learned_agent, oracle_agent

    model, cfg = load_world_model(args.checkpoint) if args.checkpoint else random_world_model(args.config)
    results = []
    for horizon in args.horizons:
        # the run's energy (its blur sizes) at the reference budget: per-step actions, one call per step, one
        # planner (the look further when stuck is a second call, made only where the first finds no progress)
        p = dataclasses.replace(cfg.planner, samples=args.samples, iterations=args.iterations,
                                elites=max(2, args.samples // 10), horizon=horizon, replan_every=1, repeat=1,
                                cost="final", until_episode_end=False, stuck_horizon=0,
                                precision=args.precision or cfg.planner.precision)
        for name, factory in (("learned", lambda: learned_agent(model, p)), ("oracle", lambda: oracle_agent(p))):
            seconds, cpu = time_calls(factory, args.calls)
            results.append({"model": name, **({"imagined_in": imagined_in(model, p)} if name == "learned" else {}),
                            "samples": p.samples, "iterations": p.iterations, "horizon": horizon,
                            "seconds_per_step": round(statistics.median(seconds), 4),
                            "seconds_per_step_p90": round(sorted(seconds)[int(0.9 * (len(seconds) - 1))], 4),
                            "cpu_seconds_per_step": round(statistics.median(cpu), 4)})
            print(f"{name} horizon {horizon}: {results[-1]['seconds_per_step']} s per replanning step "
                  f"({results[-1]['cpu_seconds_per_step']} s CPU)", file=sys.stderr, flush=True)
    report = {"command": ["python", "-m", "benchmarks.planner", *(argv if argv is not None else sys.argv[1:])],
              "device": device_name(torch.device("cpu")), "torch": torch.__version__,
              "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
              "world_model": args.checkpoint or f"random init of {args.config}",
              "frameskip": model.frameskip, "ensemble": len(model.predictors), "results": results}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
