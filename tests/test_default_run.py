"""The acceptance run: `jepa train` with no arguments, as a new user runs it (about 15 minutes)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_default_run_beats_random_init_without_collapse(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jepa", "train"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run folder: runs/" in done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    print(json.dumps({k: v for k, v in summary.items() if k != "probe"}))
    assert summary["wall_time_s"] <= 15 * 60
    assert summary["probe_accuracy"] >= summary["random_init_probe_accuracy"] + 0.03
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["effective_rank"] > 20 and last["target_std"] > 0.05  # no sign of collapse
    assert (run_dir / "loss_curve.png").stat().st_size > 0
