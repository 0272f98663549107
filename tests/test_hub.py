"""load_encoder on checkpoints laid out exactly as the official I-JEPA / V-JEPA / V-JEPA 2 releases."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from jepa import load_encoder
from jepa.build import build_encoder
from jepa.checkpoint import FORMAT, CheckpointError, save_checkpoint
from jepa.config import Config, to_dict
from jepa.data import fashion_mnist
from jepa.hub import infer_spec
from jepa.models import rope
from jepa.models.rope import vit_rope
from jepa.models.vit import resolve_size, vit_2d, vit_3d


def _randomise(model):
    """Random values everywhere (LayerNorms and biases too), so a wrongly mapped key cannot go unnoticed."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.02 if p.ndim > 1 else 0.1) + (1.0 if name.endswith("norm1.weight") else 0))
    return model.eval()


def _official(path, encoder, target, prefix):
    """{'encoder', 'target_encoder', 'predictor', 'opt', 'epoch'} with prefixed keys, as the reference trainers save."""
    state = {
        "encoder": {prefix + k: v for k, v in encoder.state_dict().items()},
        "target_encoder": {prefix + k: v for k, v in target.state_dict().items()},
        "predictor": {prefix + "predictor_embed.weight": torch.randn(8, 4)},
        "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "epoch": 300,
    }
    torch.save(state, path)
    return path


def _ijepa_pair():
    torch.manual_seed(0)
    make = lambda: _randomise(vit_2d(resolve_size("vit_tiny", depth=2), img_size=32, patch_size=8, in_chans=3))
    return make(), make()


def test_ijepa_checkpoint_loads_the_target_encoder_and_matches_timm(tmp_path, capsys):
    context, target = _ijepa_pair()
    path = _official(tmp_path / "IN1K-vit.h.14-300e.pth.tar", context, target, "module.")
    backbone = load_encoder(path)
    assert "loaded target_encoder" in capsys.readouterr().err
    report = backbone.report
    assert (report.format, report.weights, report.prefix) == ("I-JEPA", "target_encoder", "module.")
    assert (backbone.img_size, backbone.patch_size, backbone.num_frames, backbone.tubelet_size) == (32, 8, None, None)
    assert backbone.mean == (0.485, 0.456, 0.406) and backbone.encoder.num_heads == 3
    timm_model = TimmViT(img_size=32, patch_size=8, num_classes=0, global_pool="avg", embed_dim=192, depth=2,
                         num_heads=3, class_token=False, fc_norm=False, qkv_bias=True).eval()
    timm_model.load_state_dict(target.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), timm_model.forward_features(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(backbone(x), timm_model(x), atol=1e-5, rtol=0)
        context_backbone = load_encoder(path, which="context", verbose=False)
        assert context_backbone.report.weights == "encoder"
        torch.testing.assert_close(context_backbone.forward_features(x), context(x))
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training


def test_ijepa_at_another_resolution_resizes_the_table_once(tmp_path):
    context, target = _ijepa_pair()
    path = _official(tmp_path / "ijepa.pth", context, target, "module.")
    backbone = load_encoder(path, img_size=48, verbose=False)
    assert backbone.img_size == 48 and backbone.encoder.pos_embed.shape == (1, 36, 192)
    assert "resized from grid (4, 4) to (6, 6)" in str(backbone.report)
    with torch.no_grad():
        assert backbone.forward_features(torch.randn(1, 3, 48, 48)).shape == (1, 36, 192)
        # the native-size backbone resizes on the fly to the same result
        native = load_encoder(path, verbose=False)
        x = torch.randn(1, 3, 48, 48)
        torch.testing.assert_close(native.forward_features(x), backbone.forward_features(x))


def test_vjepa_checkpoint_needs_the_frame_count_behind_its_3d_table(tmp_path):
    torch.manual_seed(0)
    make = lambda: _randomise(vit_3d(resolve_size("vit_tiny", depth=2), img_size=32, num_frames=4, patch_size=8,
                                     tubelet_size=2, in_chans=3))
    context, target = make(), make()
    path = _official(tmp_path / "vitl16.pth.tar", context, target, "module.backbone.")
    with pytest.raises(CheckpointError, match=r"num_frames=4 with img_size=32.*pass num_frames= or img_size="):
        load_encoder(path)
    for hint in ({"num_frames": 4}, {"img_size": 32}):
        backbone = load_encoder(path, verbose=False, **hint)
        assert (backbone.report.format, backbone.report.prefix) == ("V-JEPA", "module.backbone.")
        assert (backbone.num_frames, backbone.img_size, backbone.tubelet_size) == (4, 32, 2)
        clip = torch.randn(2, 3, 4, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(backbone.forward_features(clip), target(clip))
            # an image is repeated over the clip length, as V-JEPA evaluates images
            image = torch.randn(2, 3, 32, 32)
            torch.testing.assert_close(backbone(image, pool="none"), target(image.unsqueeze(2).repeat(1, 1, 4, 1, 1)))
    longer = load_encoder(path, num_frames=8, img_size=32, verbose=False)
    assert longer.num_frames == 8 and longer.encoder.pos_embed.shape == (1, 4 * 16, 192)


def _hf_vjepa2(our_encoder, crop_size, frames):
    """transformers' VJEPA2Model with our encoder's weights, keys mapped as its layout needs."""
    from transformers import VJEPA2Config, VJEPA2Model

    config = VJEPA2Config(crop_size=crop_size, frames_per_clip=frames, patch_size=16, tubelet_size=2,
                          hidden_size=1024, num_attention_heads=16, num_hidden_layers=2, pred_hidden_size=32,
                          pred_num_attention_heads=2, pred_num_hidden_layers=1, pred_num_mask_tokens=2)
    model = VJEPA2Model(config).eval()
    mapped = {}
    for key, value in our_encoder.state_dict().items():
        key = key.replace("blocks.", "encoder.layer.").replace("patch_embed.", "encoder.embeddings.patch_embeddings.")
        key = "encoder.layernorm." + key[len("norm."):] if key.startswith("norm.") else key
        if ".attn.qkv." in key:
            for name, part in zip(("query", "key", "value"), value.chunk(3)):
                mapped[key.replace("attn.qkv", f"attention.{name}")] = part
        else:
            mapped[key.replace("attn.proj", "attention.proj")] = value
    model.encoder.load_state_dict({k[len("encoder."):]: v for k, v in mapped.items()}, strict=True)
    return model


def test_vjepa2_checkpoint_matches_huggingface_vjepa2model(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    make = lambda: _randomise(vit_rope(resolve_size("vit_large", depth=2), patch_size=16, tubelet_size=2, in_chans=3))
    context, target = make(), make()
    path = _official(tmp_path / "vitl.pt", context, target, "module.backbone.")
    backbone = load_encoder(path, verbose=False)
    assert (backbone.report.format, backbone.report.weights) == ("V-JEPA 2", "target_encoder")
    assert backbone.spec.positions == "rope" and backbone.encoder.num_heads == 16 and len(backbone.encoder.blocks) == 2
    hf = _hf_vjepa2(target, crop_size=48, frames=6)
    clip = torch.randn(2, 3, 6, 48, 48)  # a 3 x 3 x 3 token grid: every axis has several positions
    image = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ours = backbone.forward_features(clip)
        theirs = hf(clip.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state  # HF takes [B, T, C, H, W]
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
        # a single image fills one tubelet, as HF (and V-JEPA 2-AC) duplicate short inputs
        theirs_image = hf(image.unsqueeze(1), skip_predictor=True).last_hidden_state
        torch.testing.assert_close(backbone.forward_features(image), theirs_image, atol=1e-4, rtol=0)

    # negative control: the textbook layout (angles interleaved per pair) is far off, so the match above is the layout
    def interleaved(positions, head_dim):
        d = rope.axis_dims(head_dim)
        omega = 1.0 / 10000.0 ** (torch.arange(d // 2, dtype=torch.float32) / (d / 2.0))
        angles = (positions.float().unsqueeze(-1) * omega).repeat_interleave(2, dim=-1).flatten(-2)
        return angles.cos(), angles.sin()

    monkeypatch.setattr(rope, "rope_tables", interleaved)
    with torch.no_grad():
        assert (backbone.forward_features(clip) - theirs).abs().max() > 1e-2


def _with_pos_embed(path, rows):
    """The file with a (never used) 3-D table added to both encoders, as a V-JEPA 2 file might still carry."""
    state = torch.load(path, weights_only=True)
    for entry in ("encoder", "target_encoder"):
        width = state[entry]["module.backbone.norm.weight"].shape[0]
        state[entry]["module.backbone.pos_embed"] = torch.randn(1, rows, width)
    torch.save(state, path)
    return path


def test_vjepa2_file_with_an_unused_pos_embed_loads_exactly_with_rope_true(tmp_path, capsys):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    make = lambda: _randomise(vit_rope(resolve_size("vit_large", depth=2), patch_size=16, tubelet_size=2, in_chans=3))
    context, target = make(), make()
    path = _with_pos_embed(_official(tmp_path / "vitl.pt", context, target, "module.backbone."), rows=27)
    backbone = load_encoder(path, rope=True)
    printed = capsys.readouterr().err
    assert "(V-JEPA 2)" in printed and "ignored keys unused by the chosen architecture: ['pos_embed']" in printed
    report = backbone.report
    assert (report.format, report.ignored, report.unexpected, report.missing) == ("V-JEPA 2", ("pos_embed",), (), ())
    assert backbone.spec.positions == "rope"
    hf = _hf_vjepa2(target, crop_size=48, frames=6)
    clip = torch.randn(2, 3, 6, 48, 48)
    with torch.no_grad():
        theirs = hf(clip.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state
        torch.testing.assert_close(backbone.forward_features(clip), theirs, atol=1e-4, rtol=0)

        # left to inference the same file is a V-JEPA encoder (its table says so), and the printout says how to force RoPE
        table = load_encoder(path, num_frames=6)
        printed = capsys.readouterr().err
        assert "(V-JEPA)" in printed and "inferred from the file's pos_embed" in printed and "rope=True" in printed
        assert table.report.format == "V-JEPA" and table.spec.positions == "table" and table.report.ignored == ()
        assert (table.forward_features(clip) - theirs).abs().max() > 1e-2  # the wrong encoder rope=True avoids
    told = load_encoder(path, num_frames=6, rope=False, verbose=False)
    assert told.report.format == "V-JEPA" and not any("inferred" in note for note in told.report.notes)


def test_table_encoder_beside_a_rotary_predictor_is_refused_until_rope_is_given(tmp_path, capsys):
    from jepa.cli import main

    torch.manual_seed(0)
    make = lambda: _randomise(vit_3d(resolve_size("vit_tiny", depth=2), img_size=32, num_frames=4, patch_size=8,
                                     tubelet_size=2, in_chans=3))
    context, target = make(), make()
    path = _official(tmp_path / "v.pth", context, target, "module.backbone.")
    state = torch.load(path, weights_only=True)
    state["predictor"] = {"module.backbone.predictor_blocks.0.mlp.fc1.weight": torch.randn(8, 4)}  # no table: RoPE
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"no 'predictor_pos_embed'.*pass rope=True.*or rope=False"):
        load_encoder(path, num_frames=4)
    clip = torch.randn(1, 3, 4, 32, 32)
    as_table = load_encoder(path, num_frames=4, rope=False, verbose=False)
    as_rope = load_encoder(path, rope=True, verbose=False)
    assert (as_table.report.format, as_rope.report.format, as_rope.report.ignored) == ("V-JEPA", "V-JEPA 2",
                                                                                       ("pos_embed",))
    with torch.no_grad():
        torch.testing.assert_close(as_table.forward_features(clip), target(clip))
    # the CLI passes the choice on: --rope / --no-rope
    assert main(["export", str(path), str(tmp_path / "rope"), "--rope"]) == 0
    assert main(["export", str(path), str(tmp_path / "table"), "--no-rope", "--num-frames", "4"]) == 0
    capsys.readouterr()
    assert load_encoder(tmp_path / "rope", verbose=False).spec.positions == "rope"
    assert load_encoder(tmp_path / "table", verbose=False).spec.positions == "table"
    # a predictor with its table is no counter-signal: inference stands, with its note
    state["predictor"]["module.backbone.predictor_pos_embed"] = torch.randn(1, 32, 8)
    torch.save(state, path)
    assert "rope=True" in str(load_encoder(path, num_frames=4, verbose=False).report)


def test_vjepa2_giant_head_count_comes_from_arch():
    weights = {"patch_embed.proj.weight": torch.empty(1408, 3, 2, 16, 16, device="meta"),
               "blocks.0.mlp.fc1.weight": torch.empty(6144, 1408, device="meta"),
               "blocks.1.mlp.fc1.weight": torch.empty(6144, 1408, device="meta")}
    with pytest.raises(CheckpointError, match=r"'vit_giant' \(16 heads\), 'vit_giant_xformers' \(22 heads\)"):
        infer_spec(weights)
    native, _ = infer_spec(weights, arch="vit_giant_xformers")
    assert (native.num_heads, native.depth, native.positions, native.tubelet_size) == (22, 2, "rope", 2)
    assert native.mlp_ratio == pytest.approx(48 / 11)
    assert infer_spec(weights, arch="vit_giant")[0].num_heads == 16
    with pytest.raises(CheckpointError, match="rope=False, but the weights have no 'pos_embed'"):
        infer_spec(weights, arch="vit_giant", rope=False)
    with pytest.raises(ValueError, match="1024 wide but the weights are 1408 wide"):
        infer_spec(weights, arch="vit_large")
    weights["patch_embed.proj.weight"] = torch.empty(1000, 3, 2, 16, 16, device="meta")
    with pytest.raises(CheckpointError, match="not a standard ViT width"):
        infer_spec(weights)


def test_partial_loads_are_refused_unless_asked(tmp_path):
    context, target = _ijepa_pair()
    path = _official(tmp_path / "ijepa.pth", context, target, "module.")
    state = torch.load(path, weights_only=True)
    del state["target_encoder"]["module.blocks.1.mlp.fc2.bias"]
    state["target_encoder"]["module.head.weight"] = torch.zeros(10, 192)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"partial load refused.*blocks\.1\.mlp\.fc2\.bias.*head\.weight.*strict=False"):
        load_encoder(path)
    backbone = load_encoder(path, strict=False, verbose=False)
    assert backbone.report.missing == ("blocks.1.mlp.fc2.bias",) and backbone.report.unexpected == ("head.weight",)
    assert "MISSING keys left at random init" in str(backbone.report)
    torch.testing.assert_close(backbone.encoder.blocks[0].attn.qkv.weight, target.blocks[0].attn.qkv.weight)


def test_bad_sources_get_clear_errors(tmp_path):
    context, target = _ijepa_pair()
    path = tmp_path / "only_encoder.pth"
    torch.save({"encoder": {"module." + k: v for k, v in context.state_dict().items()}, "epoch": 1}, path)
    with pytest.raises(CheckpointError, match="no 'target_encoder' for which='target'"):
        load_encoder(path)
    assert load_encoder(path, which="context", verbose=False).report.weights == "encoder"
    with pytest.raises(ValueError, match="which must be"):
        load_encoder(path, which="ema")
    with pytest.raises(ValueError, match="unknown arch"):
        load_encoder(path, arch="vit_colossal")
    with pytest.raises(ValueError, match="rope must be True, False or None"):
        load_encoder(path, which="context", rope="yes")
    with pytest.raises(ValueError, match="rope=True: rotary positions .* 2-D one"):
        load_encoder(path, which="context", rope=True)
    with pytest.raises(ValueError, match="num_frames is for video encoders"):
        load_encoder(path, which="context", num_frames=16)
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="neither encoder weights"):
        load_encoder(tmp_path / "junk.pth")


class Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_that_need_arbitrary_unpickling_are_refused(tmp_path):
    context, target = _ijepa_pair()
    path = _official(tmp_path / "ijepa.pth", context, target, "module.")
    state = torch.load(path, weights_only=True)
    state["args"] = Payload()  # e.g. a pickled argparse.Namespace or config object
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="files that need arbitrary unpickling are refused"):
        load_encoder(path)


def test_our_training_checkpoint_keeps_its_config_and_normalisation(tmp_path):
    torch.manual_seed(0)
    cfg = Config()
    context, target = build_encoder(cfg).eval(), build_encoder(cfg).eval()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"format": FORMAT, "config": to_dict(cfg), "encoder": context.state_dict(),
                     "target_encoder": target.state_dict(), "step": 5}, path)
    backbone = load_encoder(path, verbose=False)
    assert backbone.report.format == "jepa training checkpoint"
    assert (backbone.img_size, backbone.patch_size, backbone.mean, backbone.std) == (
        cfg.data.img_size, cfg.encoder.patch_size, fashion_mnist.MEAN, fashion_mnist.STD)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(backbone.forward_features(x), target(x))
    with pytest.raises(ValueError, match="architecture comes from its config"):
        load_encoder(path, arch="vit_tiny")
    with pytest.raises(ValueError, match="uses table positions: rope=True contradicts it"):
        load_encoder(path, rope=True)
    assert load_encoder(path, rope=False, verbose=False).spec.positions == "table"
