import json

from eval.compare import main


def test_compare_prints_a_markdown_table_named_by_run_folder(tmp_path, capsys):
    for name, acc in (("run-a", 0.7), ("run-b", 0.8)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"probe_accuracy": acc, "steps": 10}))
    assert main([str(tmp_path / "run-a" / "summary.json"), str(tmp_path / "run-b" / "summary.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| run-a | 0.7000 | 10 |" and out[3] == "| run-b | 0.8000 | 10 |"
