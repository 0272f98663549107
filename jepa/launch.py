"""Submit training as a submitit job: SLURM when it is there, local processes otherwise (same code path).

One task per GPU (or ``tasks_per_node`` CPU processes); every task exports the torch ``env://``
variables from its job environment (rendezvous on the job's first node) and runs the one training
loop. The job's run folder holds the resolved config, the submitit logs (``submitit/``), metrics and
checkpoints. On the preemption / time-limit signal every rank stops after the same step, rank 0
saves a checkpoint and submitit requeues the job, which resumes from it in the same run folder.
A rank that fails records its error in ``failures/``; the job then fails and :func:`wait` reports
the rank that failed first, never falls back to fewer processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission, TorchDistributedEnvironment

from jepa.config import Config, ConfigError, from_dict, save_config, to_dict

FAILURES = "failures"


class LaunchError(RuntimeError):
    """The job failed; the message names the rank that failed first and its error."""


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for; SLURM-only fields are ignored by local runs."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # default: one per GPU, or 1 without GPUs
    cpus_per_task: int | None = None
    time_min: int = 60
    mem_gb: float | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    job_name: str = "jepa"
    max_timeouts: int = 20  # requeues after hitting the time limit (preemptions do not count)

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or self.time_min < 1:
            raise ConfigError(f"need nodes >= 1, gpus_per_node >= 0 and time >= 1 minute, got {self}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ConfigError(f"tasks_per_node must be >= 1, got {self.tasks_per_node}")
        if self.tasks_per_node and self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            raise ConfigError(
                f"one task per GPU: tasks_per_node {self.tasks_per_node} != gpus_per_node {self.gpus_per_node}"
            )

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks


def parse_time(text: str) -> int:
    """A SLURM time limit in minutes: MIN, MIN:SEC, H:MIN:SEC, D-H, D-H:MIN or D-H:MIN:SEC (seconds round up)."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+(?::\d+){0,2})", text.strip())
    if not match:
        raise ConfigError(f"time limit {text!r} is not MIN, H:MIN:SEC or D-H:MIN:SEC")
    parts = [int(x) for x in match.group(2).split(":")]
    if match.group(1) is not None:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        hours += 24 * int(match.group(1))
    else:
        hours, minutes, seconds = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return hours * 60 + minutes + (seconds > 0)


def parse_mem(text: str) -> float:
    """Memory per node in GB: ``64``, ``64G``, ``512M``, ``1T``."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([MGT]?)B?", text.strip(), flags=re.IGNORECASE)
    if not match:
        raise ConfigError(f"memory {text!r} is not a size like 64G or 512M")
    return float(match.group(1)) * {"M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1.0}[match.group(2).upper()]


def make_executor(folder: Path, res: Resources, *, cluster: str | None = None) -> submitit.AutoExecutor:
    """An executor for ``res``: SLURM when ``sbatch`` is there (or ``cluster='slurm'``), else local processes."""
    executor = submitit.AutoExecutor(
        folder=folder, cluster=cluster, slurm_max_num_timeout=res.max_timeouts, local_max_num_timeout=res.max_timeouts
    )
    params: dict[str, Any] = {
        "name": res.job_name, "nodes": res.nodes, "tasks_per_node": res.tasks,
        "gpus_per_node": res.gpus_per_node, "timeout_min": res.time_min,
        "slurm_srun_args": ["--kill-on-bad-exit=1"],  # one failed task ends the whole step
    }
    if res.cpus_per_task:
        params["cpus_per_task"] = res.cpus_per_task
    if res.mem_gb:
        params["mem_gb"] = res.mem_gb
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(res, name):
            params[f"slurm_{name}"] = getattr(res, name)
    try:
        executor.update_parameters(**params)
    except ValueError as err:
        raise ConfigError(f"{executor.cluster} executor refuses these resources: {err}") from err
    return executor


def record_failure(run_dir: Path, rank: int) -> None:
    """Write this rank's traceback with the time it failed, so the first failure can be told from its echoes."""
    folder = run_dir / FAILURES
    folder.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "time": time.time(), "host": socket.gethostname(), "traceback": traceback.format_exc()}
    (folder / f"rank{rank}.json").write_text(json.dumps(record, indent=1) + "\n")


def first_failure(run_dir: Path) -> dict[str, Any] | None:
    """The earliest failure recorded in ``run_dir`` (the cause; later ones are usually lost peers)."""
    records = [json.loads(p.read_text()) for p in sorted((run_dir / FAILURES).glob("rank*.json"))]
    return min(records, key=lambda r: r["time"]) if records else None


def preemption_signal() -> signal.Signals:
    """The signal submitit checkpoints and requeues on (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    return submitit.JobEnvironment._usr_sig()


class TrainJob(Checkpointable):
    """The submitted callable: one rank of a training run, requeued through :meth:`checkpoint`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def __call__(self) -> dict[str, Any]:
        from jepa.train import TrainingStopped, train

        dist_env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        cfg = from_dict(self.config)
        preempt = preemption_signal()
        try:
            # SIGTERM stays with submitit (ignored): SLURM sends it on preemption next to USR2, and
            # stopping on it would end the job instead of requeueing it
            return train(cfg, stop_signals=(signal.SIGINT, preempt))
        except TrainingStopped as stop:
            if stop.signal_name != preempt.name:
                raise
            requeue = signal.getsignal(preempt)  # submitit's handler again, now that training has let go
            if callable(requeue):
                requeue(preempt, None)  # rank 0: dump checkpoint() and requeue, then exit; other ranks return
            raise SystemExit(0) from None  # checkpoint saved; the requeued job goes on
        except Exception:
            record_failure(Path(cfg.run_dir), dist_env.rank)
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Resubmit the same run: training resumes from the run folder's checkpoint."""
        return DelayedSubmission(TrainJob(self.config))


def launch(cfg: Config, res: Resources, *, cluster: str | None = None) -> submitit.Job:
    """Submit ``cfg`` as a job of ``res``: fixes the run folder, writes the resolved config, returns the job."""
    from jepa.batching import batch_plan
    from jepa.train import new_run_dir

    batch_plan(cfg, res.world_size)  # a global batch that cannot be split fails here, not on the cluster
    if cfg.run_dir is None:
        cfg.run_dir = new_run_dir()
    run_dir = Path(cfg.run_dir).resolve()
    cfg.run_dir = str(run_dir)
    existed = run_dir.exists()
    try:
        executor = make_executor(run_dir / "submitit", res, cluster=cluster)
    except ConfigError:
        if not existed:  # submitit made the folder; a refused request leaves nothing behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / FAILURES, ignore_errors=True)
    save_config(cfg, run_dir / "config.yaml")
    return executor.submit(TrainJob(to_dict(cfg)))


def wait(job: submitit.Job, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Block until ``job`` ends; rank 0's summary, or :class:`LaunchError` naming the rank that failed first."""
    try:
        results = job.results()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as err:
        first = first_failure(Path(run_dir))
        if first is None:
            raise LaunchError(f"job {job.job_id} failed: {err}") from err
        raise LaunchError(
            f"job {job.job_id}: rank {first['rank']} failed first (on {first['host']}):\n{first['traceback']}"
            f"all failures: {Path(run_dir) / FAILURES}; logs: {job.paths.folder}"
        ) from err
    return results[0]
