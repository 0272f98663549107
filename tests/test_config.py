from pathlib import Path

import pytest
import torch

from jepa.build import build_encoder
from jepa.config import Config, ConfigError, load_config, parse_override, to_dict, from_dict
from jepa.models.vit import VIT_SIZES

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_spells_out_the_embedded_default():
    assert to_dict(load_config(ROOT / "configs/ijepa/default.yaml")) == to_dict(Config())


@pytest.mark.parametrize("name", ["vit_b16_imagenet.yaml", "vit_h14_imagenet.yaml"])
def test_paper_recipes_load_with_reference_hyper_parameters(name):
    cfg = load_config(ROOT / "configs/ijepa" / name)
    assert cfg.predictor.embed_dim == 384 and cfg.predictor.depth == 12
    assert cfg.masks.num_targets == 4 and cfg.masks.target_scale == (0.15, 0.2)
    assert cfg.masks.context_scale == (0.85, 1.0) and cfg.masks.min_keep == 10
    assert cfg.optim.lr == 1e-3 and cfg.optim.final_lr == 1e-6 and cfg.optim.weight_decay == (0.04, 0.4)
    assert cfg.optim.ema == (0.996, 1.0) and cfg.data.crop_scale == (0.3, 1.0) and cfg.data.img_size == 224


def test_unknown_key_is_an_error_naming_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.lrr'.*lr, start_lr"):
        load_config(None, ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        load_config(None, ["trian.steps=3"])


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 5\n  stepz: 6\n")
    with pytest.raises(ConfigError, match="train.stepz"):
        load_config(path)


def test_overrides_are_typed():
    cfg = load_config(None, ["train.steps=7", "optim.lr=1e-2", "masks.target_scale=[0.1, 0.2]", "run_dir=x"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 0.01 and cfg.masks.target_scale == (0.1, 0.2)
    assert cfg.run_dir == "x"
    assert isinstance(load_config(None, ["optim.lr=1"]).optim.lr, float)
    for key in ("onednn_linear", "split_attention"):
        values = [getattr(load_config(None, [f"perf.{key}={v}"]).perf, key) for v in ("auto", "true", "false")]
        assert values == ["auto", True, False]
    assert [load_config(None, [f"masks.token_multiple={v}"]).masks.token_multiple for v in ("auto", "4")] == ["auto", 4]
    assert [load_config(None, [f"masks.context_tokens={v}"]).masks.context_tokens for v in ("64", "null")] == [64, None]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=abc", "expected an integer"),
        ("train.steps=1.5", "expected an integer"),
        ("loss.kind=huber", "not one of"),
        ("masks.target_scale=[0.1]", "list of 2"),
        ("train.steps=0", "train.steps must be >= 1"),
        ("data.img_size=30", "multiple of encoder.patch_size"),
        ("probe.monitor_every=-1", "probe.monitor_every must be >= 0"),
        ("optim", "key=value"),
        ("train=3", "expected a section"),
        ("perf.onednn_linear=maybe", "does not fit"),
        ("masks.token_multiple=0", "masks.token_multiple must be 'auto' or >= 1"),
        ("masks.token_multiple=eight", "does not fit"),
        ("masks.context_tokens=9", "masks.context_tokens must be .auto., null or >= masks.min_keep"),
    ],
)
def test_bad_values_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_dict_round_trip():
    cfg = load_config(None, ["train.steps=9", "optim.grad_clip=1.0"])
    assert from_dict(to_dict(cfg)) == cfg


def test_parse_override_nests():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}


@pytest.mark.parametrize("name", ["vit_l16.yaml", "vit_h16.yaml"])
def test_video_recipes_load_with_reference_hyper_parameters(name):
    cfg = load_config(ROOT / "configs/vjepa" / name)
    assert (cfg.video.num_frames, cfg.video.frame_step, cfg.video.tubelet_size) == (16, 4, 2)
    assert cfg.data.img_size == 224 and cfg.encoder.patch_size == 16
    assert cfg.video.short_range == (8, 0.15) and cfg.video.long_range == (2, 0.7)
    assert cfg.loss.kind == "l1" and cfg.optim.ema == (0.998, 1.0)


def test_video_default_loads():
    cfg = load_config(ROOT / "configs/vjepa/default.yaml")
    assert cfg.data.source == "moving-digits" and cfg.video.num_frames % cfg.video.tubelet_size == 0


@pytest.mark.parametrize("path, arch, patch", [
    ("ijepa/vit_b16_imagenet.yaml", "vit_base", 16), ("ijepa/vit_h14_imagenet.yaml", "vit_huge", 14),
    ("vjepa/vit_l16.yaml", "vit_large", 16), ("vjepa/vit_h16.yaml", "vit_huge", 16),
])
def test_recipes_build_the_reference_architecture(path, arch, patch):
    """The dataclass defaults are the small CPU run, so a recipe must not inherit its sizes."""
    cfg = load_config(ROOT / "configs" / path)
    assert cfg.encoder.arch == arch and cfg.encoder.patch_size == patch
    assert cfg.loss.var_coeff == 0 and cfg.loss.cov_coeff == 0
    assert cfg.predictor.shared_context is False  # the reference's predictor pass per target block
    with torch.device("meta"):
        encoder = build_encoder(cfg)
    size = VIT_SIZES[arch]
    assert (encoder.embed_dim, len(encoder.blocks), encoder.num_heads) == (size.embed_dim, size.depth, size.num_heads)
