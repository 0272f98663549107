import json

import pytest
import torch

from eval.knn import main
from jepa.config import load_config
from jepa.train import train

TINY = [
    "encoder.embed_dim=32", "encoder.depth=2", "encoder.num_heads=2", "predictor.embed_dim=16",
    "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=16", "train.steps=2",
    "train.precision=fp32", "probe.enabled=false", "wandb.mode=disabled",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(load_config(None, [*TINY, f"run_dir={run}"]))
    return run / "checkpoint.pt"


def run(capsys, *argv):
    capsys.readouterr()
    assert main(list(argv)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_knn_prints_one_json_line_with_top1_last_and_reuses_cached_features(checkpoint, capsys):
    argv = ["--checkpoint", str(checkpoint), "--data", "fashion-mnist", "--train-size", "600", "--k", "20", "5"]
    record = run(capsys, *argv)
    assert list(record)[-1] == "top1" and record["top1"] == record["k"]["20"]["top1"]
    assert 0.3 < record["top1"] <= 1.0 and set(record["k"]) == {"20", "5"}
    assert all(r["top5"] >= r["top1"] for r in record["k"].values())
    assert record["protocol"] == "knn cosine" and record["weights"] == "trained"
    assert record["train_size"] == 600 and record["test_size"] == 10000
    assert record["cache"] == {"train": "miss", "test": "miss"}
    assert (checkpoint.parent / "features" / "target-train.safetensors").is_file()
    again = run(capsys, *argv)
    assert again["cache"] == {"train": "hit", "test": "hit"} and again["k"] == record["k"]


def test_random_init_baseline_uses_its_own_cache(checkpoint, tmp_path, capsys):
    argv = ["--checkpoint", str(checkpoint), "--train-size", "600", "--cache-dir", str(tmp_path), "--random-init"]
    record = run(capsys, *argv)
    assert record["weights"] == "random-init" and record["cache"]["train"] == "miss"
    assert 0.0 <= record["top1"] <= 1.0 and list(record["k"]) == ["20"]
    assert (tmp_path / "random-init-train.safetensors").is_file() and not (tmp_path / "target-train.safetensors").exists()
    assert run(capsys, *argv)["top1"] == record["top1"]  # seeded: the same baseline every time


def test_bad_input_is_a_clear_error(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "other.pt")])
    assert "not a jepa training checkpoint" in capsys.readouterr().err
    unlabelled = tmp_path / "images"
    (unlabelled / "train").mkdir(parents=True)
    (unlabelled / "val").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(checkpoint), "--data", str(unlabelled), "--cache-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "no class sub-folders" in capsys.readouterr().err
    for bad in (["--k", "0"], ["--temperature", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(checkpoint), *bad])
        assert exit_info.value.code == 2
