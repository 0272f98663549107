"""Command line: ``jepa train``, ``jepa launch`` (SLURM or local job), ``jepa export`` and ``jepa plan``."""

from __future__ import annotations

import argparse
import json
import sys

from jepa.config import Config, ConfigError, load_config, load_plan_config


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
    launch_p = sub.add_parser(
        "launch", help="submit training as a job: SLURM through submitit, local processes without SLURM",
        description="One task per GPU; the global batch (data.batch_size) stays what the config says.",
    )
    launch_p.add_argument("--config", help="YAML config; omitted: the embedded default")
    launch_p.add_argument("--nodes", type=int, default=1)
    launch_p.add_argument("--gpus-per-node", type=int, default=0, help="one task per GPU")
    launch_p.add_argument("--tasks-per-node", type=int, help="processes per node (default: one per GPU, or 1); "
                          "CPU-only runs set this")
    launch_p.add_argument("--cpus-per-task", type=int)
    launch_p.add_argument("--partition")
    launch_p.add_argument("--account")
    launch_p.add_argument("--qos")
    launch_p.add_argument("--time", default="60", help="time limit: MIN, H:MIN:SEC or D-H:MIN:SEC (default 60 min)")
    launch_p.add_argument("--mem", help="memory per node, e.g. 64G")
    launch_p.add_argument("--constraint")
    launch_p.add_argument("--job-name", default="jepa")
    launch_p.add_argument("--max-timeouts", type=int, default=20,
                          help="times a job that hits its time limit is requeued (preemptions do not count)")
    launch_p.add_argument("--cluster", choices=["auto", "slurm", "local"], default="auto",
                          help="auto: SLURM when sbatch is available, else local processes")
    launch_p.add_argument("--wait", action="store_true", help="block until a SLURM job ends (local jobs always wait)")
    launch_p.add_argument("overrides", nargs="*", metavar="key=value")
    plan_p = sub.add_parser("plan", help="two-rooms planning recipe: collect, pretrain, world model, evaluate (resumable)")
    plan_p.add_argument("--config", help="YAML plan config, e.g. configs/plan/two_rooms.yaml; omitted: its defaults")
    plan_p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. run_dir=runs/p world_model.steps=500")
    args = parser.parse_args(argv)
    if args.command == "export":
        return _export(parser, args)
    if args.command == "plan":
        return _plan(parser, args)

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"jepa: config error: {err}\n")

    if args.command == "launch":
        return _launch(args, cfg, parser)

    from jepa.distributed import DistributedEnvError
    from jepa.train import NonFiniteLoss, TrainingStopped, train

    try:
        summary = train(cfg)
    except TrainingStopped as err:
        print(f"jepa: {err}", file=sys.stderr)
        return 130
    except (NonFiniteLoss, DistributedEnvError, FileNotFoundError, ValueError) as err:
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


def _launch(args: argparse.Namespace, cfg: Config, parser: argparse.ArgumentParser) -> int:
    from submitit.slurm.slurm import SlurmJob

    from jepa.launch import LaunchError, Resources, launch, parse_mem, parse_time, wait

    try:
        res = Resources(
            nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
            cpus_per_task=args.cpus_per_task, time_min=parse_time(args.time),
            mem_gb=parse_mem(args.mem) if args.mem else None, partition=args.partition, account=args.account,
            qos=args.qos, constraint=args.constraint, job_name=args.job_name,
            max_timeouts=args.max_timeouts,
        )
        job = launch(cfg, res, cluster=None if args.cluster == "auto" else args.cluster)
    except ConfigError as err:
        parser.exit(2, f"jepa: launch error: {err}\n")
    local = not isinstance(job, SlurmJob)
    print(f"job {job.job_id}: {res.world_size} task(s) on {res.nodes} node(s); run folder {cfg.run_dir}; "
          f"logs {job.paths.folder}", flush=True)
    if not (local or args.wait):
        return 0
    try:
        wait(job, cfg.run_dir)
    except LaunchError as err:
        print(f"jepa: {err}", file=sys.stderr)
        return 1
    print(f"summary: {cfg.run_dir}/summary.json", flush=True)
    return 0


def _plan(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        cfg = load_plan_config(args.config, args.overrides)
    except ConfigError as err:
        parser.exit(2, f"jepa: config error: {err}\n")

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
