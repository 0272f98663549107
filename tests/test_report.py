import json

import pytest

from jepa.report import markdown_table, metric_columns, read_result


def test_table_puts_runs_side_by_side_with_blanks_for_missing_metrics():
    a = {"probe_accuracy": 0.7726, "random_init_probe_accuracy": 0.7035, "steps": 600, "wall_time_s": 719.2}
    b = {"probe_accuracy": 0.6, "per_frame_probe_accuracy": 0.19, "steps": 400}
    table = markdown_table([a, b], ["images", "video"])
    lines = table.splitlines()
    assert lines[0] == ("| run | probe_accuracy | random_init_probe_accuracy | per_frame_probe_accuracy "
                        "| steps | wall_time_s |")
    assert lines[2] == "| images | 0.7726 | 0.7035 |  | 600 | 719.2 |"
    assert lines[3] == "| video | 0.6000 |  | 0.1900 | 400 |  |"
    assert metric_columns([{"top1": 0.5, "k": 20, "ok": True}]) == ["top1"]
    with pytest.raises(ValueError):
        markdown_table([a], ["x", "y"])


def test_read_result_takes_json_files_and_last_json_lines(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"probe_accuracy": 0.5}, indent=2))
    (tmp_path / "probe.txt").write_text('progress\n{"test_accuracy": 0.8}\n')
    assert read_result(tmp_path / "summary.json") == {"probe_accuracy": 0.5}
    assert read_result(tmp_path / "probe.txt") == {"test_accuracy": 0.8}
    (tmp_path / "bad.txt").write_text("no json here")
    with pytest.raises(ValueError):
        read_result(tmp_path / "bad.txt")
    with pytest.raises(FileNotFoundError):
        read_result(tmp_path / "missing.json")
