"""The submitit launcher: local 2-task jobs that train, checkpoint, survive preemption and report failures."""

import json
import os
import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from jepa.checkpoint import load_checkpoint
from jepa.config import ConfigError, load_config
from jepa.launch import LaunchError, Resources, TrainJob, launch, make_executor, parse_mem, parse_time, wait
from jepa.train import train

# the job classes below travel to the task processes by value (this test module is not importable there)
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TINY = [
    "encoder.embed_dim=32", "encoder.depth=1", "encoder.num_heads=2",
    "predictor.embed_dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=16", "optim.warmup_steps=2", "optim.lr=5e-5", "optim.start_lr=5e-6",
    "train.precision=fp32", "train.threads=1", "train.log_every=2", "train.ckpt_every=100",
    "probe.enabled=false", "wandb.mode=disabled",
]
TWO_TASKS = Resources(tasks_per_node=2, time_min=60)


def params(path):
    state = load_checkpoint(path)
    return {f"{part}.{k}": v for part in ("encoder", "target_encoder", "predictor") for k, v in state[part].items()}


class PreemptedOnce(TrainJob):
    """Rank 1 alone receives the preemption signal after its 3rd step, once per run folder (as a scheduler would)."""

    def __call__(self):
        import signal

        import jepa.train
        from jepa.launch import preemption_signal

        real, calls = jepa.train.train_step, {"n": 0}
        marker = Path(self.config["run_dir"]) / "preempted"

        def step(*args, **kwargs):
            out = real(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 3 and os.environ["RANK"] == "1" and not marker.exists():
                marker.touch()
                signal.raise_signal(preemption_signal())
            return out

        jepa.train.train_step = step
        return super().__call__()


class Rank1Fails(TrainJob):
    def __call__(self):
        import jepa.train

        real = jepa.train.train_step

        def step(*args, **kwargs):
            if os.environ["RANK"] == "1":
                raise RuntimeError("rank 1 exploded on purpose")
            return real(*args, **kwargs)

        jepa.train.train_step = step
        return super().__call__()


def submit(job_class, cfg, monkeypatch):
    monkeypatch.setattr("jepa.launch.TrainJob", job_class)  # launch() submits the injected class
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return launch(cfg, TWO_TASKS, cluster="local")


@pytest.mark.slow  # about 60 s on the busy 2-core machine: two job starts of two processes each
def test_preempted_two_task_job_requeues_resumes_and_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    steps = 6
    cfg = load_config(None, [*TINY, f"train.steps={steps}", f"run_dir={tmp_path / 'job'}"])
    job = submit(PreemptedOnce, cfg, monkeypatch)
    summary = wait(job, cfg.run_dir)
    run = tmp_path / "job"
    assert (run / "preempted").exists() and (run / "config.yaml").exists()
    assert summary["restarts"] == 1 and summary["world_size"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # stopped after step 4 (rank 1's signal agreed one step later), checkpointed, requeued, resumed
    assert [(r["step"], r["restarts"]) for r in records] == [(2, 0), (4, 0), (6, 1)]
    logs = "".join(p.read_text() for p in (run / "submitit").glob("*_0_log.*"))
    assert "Requeued job" in logs and "resuming from" in logs

    train(load_config(None, [*TINY, f"train.steps={steps}", f"run_dir={tmp_path / 'straight'}"]))
    resumed, straight = params(run / "checkpoint.pt"), params(tmp_path / "straight" / "checkpoint.pt")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-5, rtol=0, msg=key)


def test_a_failing_rank_ends_the_job_with_its_error(tmp_path, monkeypatch):
    cfg = load_config(None, [*TINY, "train.steps=4", f"run_dir={tmp_path}"])
    job = submit(Rank1Fails, cfg, monkeypatch)
    with pytest.raises(LaunchError, match=r"rank 1 failed first(.|\n)*RuntimeError: rank 1 exploded on purpose"):
        wait(job, cfg.run_dir)
    assert not (tmp_path / "summary.json").exists()  # no rank carried on alone


def test_time_and_memory_are_read_like_slurm():
    assert [parse_time(t) for t in ("90", "45:30", "1:30:00", "2-00:00:00", "1-2:30")] == [90, 46, 90, 2880, 1590]
    assert (parse_mem("64G"), parse_mem("512M"), parse_mem("1T")) == (64.0, 0.5, 1024.0)
    with pytest.raises(ConfigError, match="time limit"):
        parse_time("soon")


def test_resources_are_one_task_per_gpu():
    assert Resources(nodes=2, gpus_per_node=8).world_size == 16
    assert Resources().tasks == 1
    with pytest.raises(ConfigError, match="one task per GPU"):
        Resources(gpus_per_node=4, tasks_per_node=2)


def test_slurm_executor_gets_the_requested_resources(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")  # submitit looks for srun
    res = Resources(nodes=2, gpus_per_node=4, time_min=120, mem_gb=64, partition="gpu", account="lab",
                    qos="high", constraint="h100", job_name="ijepa")
    executor = make_executor(tmp_path, res, cluster="slurm")
    p = executor._executor.parameters
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"], p["time"]) == (2, 4, 4, 120)
    assert (p["partition"], p["account"], p["qos"], p["constraint"], p["job_name"]) == ("gpu", "lab", "high", "h100", "ijepa")
    assert "--kill-on-bad-exit=1" in p["srun_args"]
    assert executor._executor.max_num_timeout == 20
    text = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "uid")
    assert "#SBATCH --ntasks-per-node=4" in text and "#SBATCH --signal=USR2" in text


def test_local_executor_refuses_several_nodes(tmp_path):
    with pytest.raises(ConfigError, match="one node"):
        make_executor(tmp_path, Resources(nodes=2), cluster="local")


def test_cli_launch_refuses_bad_requests_before_submitting(tmp_path, capsys):
    from jepa.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["launch", "--cluster", "local", "--nodes", "2", f"run_dir={tmp_path / 'a'}"])
    assert exit_info.value.code == 2 and "one node" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["launch", "--cluster", "local", "--tasks-per-node", "3", "data.batch_size=16", f"run_dir={tmp_path / 'b'}"])
    assert "not divisible by 3 process(es)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["launch", "--time", "soon", f"run_dir={tmp_path / 'c'}"])
    assert "time limit" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")
