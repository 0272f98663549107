"""The V-JEPA acceptance run: the embedded video default (a few minutes on 2 cores)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_video_default_beats_random_init_on_the_motion_probe(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jepa", "train", "--config", str(ROOT / "configs/vjepa/default.yaml"),
         f"run_dir={tmp_path / 'run'}", "wandb.mode=disabled"],
        capture_output=True, text=True, timeout=3600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "probe"}))
    assert summary["probe_accuracy"] > summary["random_init_probe_accuracy"]
