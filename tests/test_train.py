"""End-to-end behaviour of the training loop on tiny models (seconds each)."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

import jepa.losses
import jepa.train
from jepa.checkpoint import CheckpointError, load_checkpoint
from jepa.cli import main as cli_main
from jepa.config import load_config
from jepa.train import NonFiniteLoss, TrainingStopped, train

TINY = [
    "encoder.embed_dim=32", "encoder.depth=2", "encoder.num_heads=2",
    "predictor.embed_dim=16", "predictor.depth=1", "predictor.num_heads=2",
    "data.batch_size=16", "optim.warmup_steps=2", "train.precision=fp32",
    "train.log_every=2", "train.ckpt_every=4", "probe.enabled=false", "wandb.mode=disabled",
]


def tiny(run_dir, *extra):
    return load_config(None, [*TINY, f"run_dir={run_dir}", *extra])


def params(path):
    state = load_checkpoint(path)
    return {f"{part}.{k}": v for part in ("encoder", "target_encoder", "predictor") for k, v in state[part].items()}


def assert_same_params(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_tiny_run_lowers_the_loss(tmp_path):
    train(tiny(tmp_path, "train.steps=40", "optim.lr=2e-3", "train.ckpt_every=40"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(2, 41, 2))
    first, last = np.mean([r["loss"] for r in records[:3]]), np.mean([r["loss"] for r in records[-3:]])
    assert last < 0.8 * first
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 40


def test_stop_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    steps = 10
    train(tiny(tmp_path / "straight", f"train.steps={steps}"))

    real_step, calls = jepa.train.train_step, {"n": 0}

    def step_then_sigterm(*args, **kwargs):
        out = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal path: handled after this step
        return out

    monkeypatch.setattr(jepa.train, "train_step", step_then_sigterm)
    with pytest.raises(TrainingStopped, match="SIGTERM at step 5"):
        train(tiny(tmp_path / "stopped", f"train.steps={steps}"))
    assert load_checkpoint(tmp_path / "stopped" / "checkpoint.pt")["step"] == 5
    monkeypatch.setattr(jepa.train, "train_step", real_step)
    train(tiny(tmp_path / "stopped", f"train.steps={steps}"))
    assert_same_params(params(tmp_path / "straight" / "checkpoint.pt"), params(tmp_path / "stopped" / "checkpoint.pt"))
    logged = [json.loads(line)["step"] for line in (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged))  # nothing logged twice across the restart


def test_larger_steps_extend_a_finished_run(tmp_path):
    train(tiny(tmp_path, "train.steps=4"))
    train(tiny(tmp_path, "train.steps=6"))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 6
    assert train(tiny(tmp_path, "train.steps=6"))["steps"] == 6  # already there: nothing to train


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real, calls = jepa.losses.prediction_loss, {"n": 0}

    def poisoned(pred, target, kind="smooth_l1"):
        calls["n"] += 1
        value = real(pred, target, kind)
        return value * float("nan") if calls["n"] > 5 else value

    monkeypatch.setattr(jepa.losses, "prediction_loss", poisoned)
    with pytest.raises(NonFiniteLoss, match=r"non-finite.*last good checkpoint \(step 4\)"):
        train(tiny(tmp_path, "train.steps=12"))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["encoder"].values())


def test_resume_with_changed_model_shape_is_a_clear_error(tmp_path):
    train(tiny(tmp_path, "train.steps=2"))
    with pytest.raises(CheckpointError, match=r"encoder.*shape mismatches"):
        train(tiny(tmp_path, "train.steps=4", "encoder.embed_dim=48"))


def _image_folder(root, n_per_class=12, corrupt=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    for i in range(corrupt):
        (root / "train" / "a" / f"broken{i}.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")


def test_image_folder_with_corrupt_files_is_skipped_and_counted(tmp_path, capsys):
    _image_folder(tmp_path / "data")
    cfg = tiny(tmp_path / "run", "train.steps=6", f"data.source={tmp_path / 'data'}", "encoder.in_chans=3",
               "data.warn_every=2")
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_samples"] >= 3  # 6 steps x 16 images cover the 27 files several times
    assert "unreadable samples skipped" in capsys.readouterr().err


def test_missing_data_path_fails_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist|no train/"):
        train(tiny(tmp_path / "run", "data.source=/no/such/folder", "encoder.in_chans=3"))


def test_channel_mismatch_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="encoder.in_chans=1"):
        train(tiny(tmp_path / "run", "encoder.in_chans=3"))


def test_summary_reports_three_probes(tmp_path):
    summary = train(tiny(tmp_path, "train.steps=2", "probe.enabled=true", "probe.train_size=600", "probe.epochs=3"))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    for key in ("probe_accuracy", "random_init_probe_accuracy", "raw_pixel_probe_accuracy", "steps", "wall_time_s"):
        assert key in on_disk and on_disk[key] == summary[key]
    assert 0.1 < on_disk["raw_pixel_probe_accuracy"] <= 1.0


def test_cli_rejects_unknown_keys(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["train", "optim.lrr=0.1"])
    assert exit_info.value.code == 2
    assert "unknown config key 'optim.lrr'" in capsys.readouterr().err


def test_wandb_offline_writes_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    train(tiny(tmp_path, "train.steps=2", "wandb.mode=auto"))
    assert list((tmp_path / "wandb").glob("offline-run-*")), "auto without an API key must log offline"


@pytest.fixture(scope="module")
def tiny_moving_digits(tmp_path_factory):
    from jepa.data.moving_digits import generate

    root = tmp_path_factory.mktemp("moving-digits")
    generate(root, num_train=64, num_val=32, frames=8, progress=False)
    return root


VIDEO = [
    "data.source=moving-digits", "data.img_size=32", "encoder.in_chans=3", "encoder.patch_size=8",
    "video.num_frames=4", "video.frame_step=2", "video.shuffle_buffer=16", "masks.min_keep=2",
]


def test_tiny_video_run_lowers_the_loss_through_the_same_loop(tmp_path, tiny_moving_digits):
    cfg = tiny(tmp_path, *VIDEO, f"data.root={tiny_moving_digits}", "train.steps=30", "optim.lr=2e-3",
               "train.log_every=3", "train.ckpt_every=30")
    train(cfg)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([r["loss"] for r in records[:3]]), np.mean([r["loss"] for r in records[-3:]])
    assert last < 0.9 * first
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["encoder"]["patch_embed.proj.weight"].ndim == 5  # a tubelet (Conv3d) encoder
    assert state["predictor"]["mask_tokens.1"].shape[-1] == 16  # two mask sets, two mask tokens


def test_video_probe_reports_per_frame_baseline(tmp_path, tiny_moving_digits):
    summary = train(tiny(tmp_path, *VIDEO, f"data.root={tiny_moving_digits}", "train.steps=2", "probe.enabled=true",
                         "probe.epochs=2"))
    assert {"probe_accuracy", "random_init_probe_accuracy", "per_frame_probe_accuracy"} <= set(summary)
    assert summary["probe"]["target_encoder"]["test_size"] == 32


def test_video_target_fps_spaces_frames_by_rate(tmp_path, tiny_moving_digits):
    from jepa.data.video_data import LabelledClips

    def first_clip(*extra):
        cfg = tiny(tmp_path, *VIDEO, f"data.root={tiny_moving_digits}", *extra)
        return next(iter(LabelledClips(cfg, "test", limit=1)))[0]

    by_rate = first_clip("video.target_fps=4.0")  # moving digits are 8 fps: every 2nd frame
    assert by_rate.shape == (3, 4, 32, 32)
    torch.testing.assert_close(by_rate, first_clip("video.frame_step=2"))
    assert not torch.allclose(by_rate, first_clip("video.frame_step=1"))


# ---- scale-out: the same global batch gives the same step however it is split ----
# AdamW divides each gradient by its running RMS, so components whose gradient is at rounding level
# (|g| ~ 1e-9 < eps, e.g. some of encoder.norm.bias at init) turn the 1e-10 differences of another
# summation order into lr-sized parameter differences. A small lr keeps those at the 1e-6 level, so
# a 1e-5 parameter bound tests the distributed semantics, not Adam's amplification of float noise.
EQUAL = ["encoder.depth=1", "optim.lr=5e-5", "optim.start_lr=5e-6", "train.threads=1"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_torchrun_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    import subprocess
    import sys

    steps = 4
    overrides = [*TINY, *EQUAL, f"train.steps={steps}", f"run_dir={tmp_path / 'ddp'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "jepa", "train", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    train(tiny(tmp_path / "single", *EQUAL, f"train.steps={steps}"))
    ddp, single = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt"), load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    # the gradients themselves (Adam's first moment) agree to float precision, VICReg terms included
    for key, state in single["opt"]["state"].items():
        torch.testing.assert_close(ddp["opt"]["state"][key]["exp_avg"], state["exp_avg"], atol=1e-8, rtol=1e-5)
    assert_same_params(params(tmp_path / "ddp" / "checkpoint.pt"), params(tmp_path / "single" / "checkpoint.pt"),
                       atol=1e-5)
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (summary["world_size"], summary["global_batch"], summary["micro_batch"]) == (2, 16, 8)
    logged = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["pred_loss"] for r in logged] == pytest.approx([r["pred_loss"] for r in reference], rel=1e-5)


def test_gradient_accumulation_of_two_halves_equals_one_full_step(tmp_path):
    # batch statistics (VICReg variance/covariance) are taken per micro-batch, so they are off here:
    # accumulation is exact for the per-sample prediction loss
    plain = ["loss.var_coeff=0", "loss.cov_coeff=0", *EQUAL, "train.steps=3"]
    train(tiny(tmp_path / "full", *plain))
    train(tiny(tmp_path / "accum", *plain, "optim.accum_steps=2"))
    full, accum = load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "accum" / "checkpoint.pt")
    for key, state in full["opt"]["state"].items():
        torch.testing.assert_close(accum["opt"]["state"][key]["exp_avg"], state["exp_avg"], atol=1e-8, rtol=1e-5)
    assert_same_params(params(tmp_path / "full" / "checkpoint.pt"), params(tmp_path / "accum" / "checkpoint.pt"),
                       atol=1e-5)


def test_linear_lr_scaling_follows_the_global_batch(tmp_path):
    cfg = tiny(tmp_path, "optim.lr_scaling=linear", "optim.reference_batch=8", "train.steps=10")
    base = tiny(tmp_path, "train.steps=10")
    for step in (0, 1, 5, 9):
        assert jepa.train.step_values(step, cfg).lr == pytest.approx(2 * jepa.train.step_values(step, base).lr)


def test_resume_counts_restarts_in_metrics_and_summary(tmp_path):
    train(tiny(tmp_path, "train.steps=4"))
    summary = train(tiny(tmp_path, "train.steps=6"))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["restarts"]) for r in records] == [(2, 0), (4, 0), (6, 1)]
    assert summary["restarts"] == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["restarts"] == 1


@pytest.mark.slow
def test_a_resumed_compiled_run_loads_its_kernels_from_the_run_folder(tmp_path, monkeypatch):
    from torch._dynamo.utils import counters
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # as importing torch._dynamo leaves it
    torch._dynamo.reset()
    counters.clear()
    train(tiny(tmp_path, "train.steps=2", "perf.compile=true", "masks.context_tokens=auto"))
    assert counters["inductor"]["fxgraph_cache_miss"] > 0 and not counters["inductor"]["fxgraph_cache_hit"]
    assert any((tmp_path / "compile_cache").rglob("*.py"))  # the generated kernels

    torch._dynamo.reset()  # as a new process would start: nothing compiled in memory
    counters.clear()
    train(tiny(tmp_path, "train.steps=4", "perf.compile=true", "masks.context_tokens=auto"))
    assert counters["inductor"]["fxgraph_cache_hit"] > 0 and not counters["inductor"]["fxgraph_cache_miss"]
