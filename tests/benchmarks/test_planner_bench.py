"""The planner benchmark prints one JSON report with a time per budget and model."""

import json
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.planner import main  # noqa: E402


def test_smoke_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["device"] and report["frameskip"] == 5
    assert {r["model"] for r in report["results"]} == {"learned", "oracle"}
    assert all(r["seconds_per_step"] > 0 and r["horizon"] == 10 for r in report["results"])
    assert all(0 < r["cpu_seconds_per_step"] for r in report["results"]) and len(report["load_average"]) == 3


def test_reference_horizon_with_the_recipe_config(capsys: pytest.CaptureFixture[str]) -> None:
    """Horizon 90 equals the recipe's stuck horizon: the benchmark times the one planner, not an error."""
    assert main(["--samples", "4", "--iterations", "1", "--horizons", "90", "--calls", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(r["horizon"] == 90 and r["seconds_per_step"] > 0 for r in report["results"])


def test_precision_flag_sets_what_the_learned_model_imagines_in(capsys: pytest.CaptureFixture[str]) -> None:
    for precision in ("fp32", "bf16"):
        assert main(["--smoke", "--precision", precision]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        learned = [r for r in report["results"] if r["model"] == "learned"]
        assert [r["imagined_in"] for r in learned] == [precision]
