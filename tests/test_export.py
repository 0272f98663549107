"""Exports: safetensors + JSON round trips, timm VisionTransformer both ways."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from jepa import load_encoder
from jepa.checkpoint import CheckpointError
from jepa.export import save_encoder, to_timm
from jepa.models.rope import vit_rope
from jepa.models.vit import resolve_size, vit_2d


def _save_official(path, model, prefix="module."):
    weights = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"encoder": weights, "target_encoder": weights, "epoch": 1}, path)
    return path


def test_2d_encoder_round_trips_through_timm_within_1e_5(tmp_path):
    torch.manual_seed(0)
    source = vit_2d(resolve_size("vit_small", depth=2), img_size=32, patch_size=8, in_chans=3)
    backbone = load_encoder(_save_official(tmp_path / "ijepa.pth", source), verbose=False)
    timm_model = to_timm(backbone)
    assert isinstance(timm_model, timm.models.vision_transformer.VisionTransformer)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(timm_model.forward_features(x), backbone.forward_features(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(timm_model(x), backbone(x), atol=1e-5, rtol=0)
    # ... and back: timm's state dict, as torch.save and as safetensors, loads as a bare state dict
    torch.save(timm_model.state_dict(), tmp_path / "timm.pth")
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, tmp_path / "timm.safetensors")
    for name in ("timm.pth", "timm.safetensors"):
        again = load_encoder(tmp_path / name, verbose=False)
        assert again.report.format == "timm-style state dict" and again.report.weights == "state dict"
        with torch.no_grad():
            torch.testing.assert_close(again.forward_features(x), timm_model.forward_features(x), atol=1e-5, rtol=0)


def test_timm_i_jepa_style_model_built_locally_loads(tmp_path):
    torch.manual_seed(0)
    # timm's I-JEPA ViTs (vit_huge_patch14_gap_224 etc.): no class token, average pooling, no fc_norm
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=14, embed_dim=384, depth=2, num_heads=6, class_token=False, global_pool="avg",
        fc_norm=False, num_classes=0).eval()
    with torch.no_grad():
        model.pos_embed.normal_()  # learned positions, nothing like sincos
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    backbone = load_encoder(tmp_path / "timm.pth", verbose=False)
    assert (backbone.img_size, backbone.patch_size, backbone.encoder.num_heads) == (28, 14, 6)
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), model.forward_features(x), atol=1e-5, rtol=0)
    # a classifier head is not part of the encoder: refused, or reported and dropped when asked
    with_head = timm.models.vision_transformer.VisionTransformer(
        img_size=28, patch_size=14, embed_dim=384, depth=2, num_heads=6, class_token=False, global_pool="avg",
        fc_norm=False, num_classes=5)
    torch.save(with_head.state_dict(), tmp_path / "head.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['head.bias', 'head.weight'\]"):
        load_encoder(tmp_path / "head.pth")
    assert load_encoder(tmp_path / "head.pth", strict=False, verbose=False).report.unexpected == ("head.bias",
                                                                                                   "head.weight")


@pytest.mark.parametrize("kind", ["image", "rope-video"])
def test_safetensors_export_round_trips(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "image":
        source = vit_2d(resolve_size("vit_tiny", depth=2), img_size=32, patch_size=8, in_chans=3)
        x = torch.randn(2, 3, 32, 32)
    else:
        source = vit_rope(resolve_size("vit_tiny", depth=2), patch_size=8, tubelet_size=2, in_chans=3)
        x = torch.randn(2, 3, 4, 16, 16)
    backbone = load_encoder(_save_official(tmp_path / "official.pth", source), verbose=False)
    folder = save_encoder(backbone, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "jepa-encoder" and config["spec"]["embed_dim"] == 192
    for source_path in (folder, folder / "model.safetensors"):
        again = load_encoder(source_path, verbose=False)
        assert again.report.format == "jepa export" and again.spec == backbone.spec
        with torch.no_grad():
            torch.testing.assert_close(again.forward_features(x), backbone.forward_features(x), atol=0, rtol=0)


def test_export_config_is_checked(tmp_path):
    source = vit_2d(resolve_size("vit_tiny", depth=1), img_size=16, patch_size=8, in_chans=3)
    folder = save_encoder(load_encoder(_save_official(tmp_path / "o.pth", source), verbose=False), tmp_path / "e")
    config = json.loads((folder / "config.json").read_text())
    config["spec"]["emb_dim"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"unknown spec keys \['emb_dim'\]"):
        load_encoder(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_encoder(folder)


def test_video_encoders_have_no_timm_equivalent(tmp_path):
    source = vit_rope(resolve_size("vit_tiny", depth=1), patch_size=8, tubelet_size=2, in_chans=3)
    with pytest.raises(ValueError, match="only 2-D image encoders"):
        to_timm(load_encoder(_save_official(tmp_path / "v.pth", source), verbose=False))


def test_cli_export_writes_what_load_encoder_reads(tmp_path, capsys):
    from jepa.cli import main

    torch.manual_seed(0)
    source = vit_2d(resolve_size("vit_tiny", depth=1), img_size=16, patch_size=8, in_chans=3)
    path = _save_official(tmp_path / "o.pth", source)
    assert main(["export", str(path), str(tmp_path / "out"), "--which", "context", "--img-size", "32"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["weights"] == "encoder" and record["format"] == "I-JEPA" and record["spec"]["img_size"] == 32
    again = load_encoder(tmp_path / "out", verbose=False)
    assert again.img_size == 32 and again.encoder.pos_embed.shape == (1, 16, 192)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing.pth"), str(tmp_path / "out2")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
