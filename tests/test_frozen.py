"""The probe programs take official-layout checkpoints through load_encoder."""

import json

import pytest
import torch

from eval.linear_probe import main as linear_probe
from jepa.models.vit import resolve_size, vit_2d


def test_linear_probe_of_an_official_layout_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    encoder = vit_2d(resolve_size("vit_tiny", depth=1), img_size=28, patch_size=7, in_chans=1)
    weights = {"module." + k: v for k, v in encoder.state_dict().items()}
    path = tmp_path / "ijepa.pth.tar"
    torch.save({"encoder": weights, "target_encoder": weights, "epoch": 1}, path)
    with pytest.raises(SystemExit) as exit_info:
        linear_probe(["--checkpoint", str(path)])
    assert exit_info.value.code == 2 and "give --data" in capsys.readouterr().err
    assert linear_probe(["--checkpoint", str(path), "--data", "fashion-mnist", "--train-size", "300",
                         "--epochs", "2"]) == 0
    captured = capsys.readouterr()
    assert "loaded target_encoder" in captured.err and "(I-JEPA)" in captured.err
    record = json.loads(captured.out.strip().splitlines()[-1])
    assert record["encoder"] == "target" and record["train_size"] == 300 and record["feature_dim"] == 192
    assert 0.3 < record["test_accuracy"] <= 1.0
