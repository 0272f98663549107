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


def test_probes_a_video_checkpoint_on_its_shards(tmp_path, capsys):
    from jepa.data.moving_digits import generate

    generate(tmp_path / "clips", num_train=32, num_val=16, frames=8, progress=False)
    train(load_config(None, [
        *TINY, f"run_dir={tmp_path / 'run'}", "data.source=moving-digits", f"data.root={tmp_path / 'clips'}",
        "data.img_size=32", "encoder.in_chans=3", "encoder.patch_size=8", "video.num_frames=4",
        "video.frame_step=2", "masks.min_keep=2",
    ]))
    capsys.readouterr()
    assert main(["--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--data", "moving-digits", "--epochs", "2"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["data"] == "moving-digits" and record["train_size"] == 32 and record["test_size"] == 16
    assert 0.0 <= record["test_accuracy"] <= 1.0


def test_linear_and_knn_probes_share_cached_features_and_cached_equals_uncached(tmp_path, capsys):
    from eval.knn import main as knn_main

    train(load_config(None, [*TINY, f"run_dir={tmp_path}"]))
    checkpoint = str(tmp_path / "checkpoint.pt")
    common = ["--checkpoint", checkpoint, "--train-size", "600", "--epochs", "3"]
    capsys.readouterr()
    main(common)
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    main(common)
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["cache"] == {"train": "miss", "test": "miss"} and again["cache"] == {"train": "hit", "test": "hit"}
    assert again["test_accuracy"] == first["test_accuracy"] and again["grid"] == first["grid"]
    knn_main(["--checkpoint", checkpoint, "--train-size", "600"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cache"] == {"train": "hit", "test": "hit"}
