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


def test_probe_programs_pass_rope_on_and_keep_it_in_the_feature_fingerprint(tmp_path, monkeypatch):
    import argparse

    from jepa import frozen as frozen_module
    from jepa.models.rope import vit_rope

    torch.manual_seed(0)
    encoder = vit_rope(resolve_size("vit_tiny", depth=1), patch_size=8, tubelet_size=2, in_chans=3)
    weights = {"module.backbone." + k: v for k, v in encoder.state_dict().items()}
    weights["module.backbone.pos_embed"] = torch.randn(1, 27, 192)  # a V-JEPA 2 file that still carries a table
    path = tmp_path / "vjepa2.pt"
    torch.save({"encoder": weights, "target_encoder": weights, "epoch": 1}, path)
    parser = argparse.ArgumentParser()
    frozen_module.add_frozen_args(parser)
    frozen = frozen_module.load_frozen(parser.parse_args(["--checkpoint", str(path), "--data", "fashion-mnist",
                                                          "--rope"]))
    assert frozen.rope is True and frozen.encoder.backbone.spec.positions == "rope"
    assert frozen.encoder.backbone.report.ignored == ("pos_embed",)

    seen = []
    monkeypatch.setattr(frozen_module, "probe_datasets", lambda cfg: ([], []))
    monkeypatch.setattr(frozen_module, "cache_hit", lambda name, *, fingerprint, **kw: seen.append(fingerprint))
    monkeypatch.setattr(frozen_module, "cached_features", lambda *a, **kw: (torch.zeros(1), torch.zeros(1)))
    frozen_module.split_features(frozen, frozen.encoder, pooling="avg")
    assert [fp["rope"] for fp in seen] == [True, True]  # the same file read without --rope is another encoder

    from jepa.build import build_encoder
    from jepa.checkpoint import FORMAT, save_checkpoint
    from jepa.config import Config, to_dict

    cfg = Config()
    ours = tmp_path / "run" / "checkpoint.pt"
    ours.parent.mkdir()
    state = build_encoder(cfg).state_dict()
    save_checkpoint({"format": FORMAT, "config": to_dict(cfg), "encoder": state, "target_encoder": state}, ours)
    with pytest.raises(ValueError, match="jepa training checkpoint, whose encoder uses a position table"):
        frozen_module.load_frozen(parser.parse_args(["--checkpoint", str(ours), "--rope"]))
