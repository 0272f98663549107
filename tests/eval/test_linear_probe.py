import json

import pytest

from eval.linear_probe import main
from jepa.config import load_config
from jepa.train import train

TINY = [
    "encoder.embed_dim=32", "encoder.depth=2", "encoder.num_heads=2", "predictor.embed_dim=16",
    "predictor.depth=1", "predictor.num_heads=2", "data.batch_size=16", "train.steps=2",
    "train.precision=fp32", "probe.enabled=false", "wandb.mode=disabled",
]


def test_probes_a_checkpoint_and_prints_one_json_line_with_test_accuracy_last(tmp_path, capsys):
    train(load_config(None, [*TINY, f"run_dir={tmp_path}"]))
    capsys.readouterr()
    assert main(["--checkpoint", str(tmp_path / "checkpoint.pt"), "--data", "fashion-mnist",
                 "--train-size", "600", "--epochs", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert list(record)[-1] == "test_accuracy" and 0.3 < record["test_accuracy"] <= 1.0
    assert record["encoder"] == "target" and record["train_size"] == 600 and record["test_size"] == 10000


def test_missing_or_foreign_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    import torch

    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "other.pt")])
    assert "not a jepa training checkpoint" in capsys.readouterr().err
