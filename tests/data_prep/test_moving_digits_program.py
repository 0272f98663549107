import json

from data_prep.moving_digits import main


def test_program_writes_train_and_val_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "md"
    args = ["--num-train", "12", "--num-val", "4", "--frames", "8", "--size", "24", "--seed", "1"]
    assert main(["--output", str(out), *args]) == 0
    line = capsys.readouterr().out
    assert "train 12 clips in 1 shards, val 4 clips in 1 shards" in line and str(out) in line
    for split, count in (("train", 12), ("val", 4)):
        manifest = json.loads((out / split / "manifest.json").read_text())
        assert manifest["num_samples"] == count and len(manifest["label_names"]["label"]) == 8
    assert main(["--output", str(out), "--num-train", "12"]) == 1  # existing shards need --overwrite
    assert "overwrite" in capsys.readouterr().err
    assert main(["--output", str(tmp_path / "bad"), "--frames", "40"]) == 1
    assert "does not fit" in capsys.readouterr().err
