import pytest
import torch

from jepa.backbone import Backbone, EncoderSpec, LoadReport, build_encoder_from_spec


def _backbone(**overrides) -> Backbone:
    spec = EncoderSpec(**{**dict(embed_dim=64, depth=1, num_heads=2, mlp_ratio=4.0, patch_size=8, in_chans=3,
                                 img_size=16), **overrides})
    return Backbone(build_encoder_from_spec(spec).eval(), spec, LoadReport("test", "test", "state dict")).eval()


def test_pooling_choices():
    backbone = _backbone()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)  # inputs are cast to the weights' dtype
    with torch.no_grad():
        tokens = backbone(x, pool="none")
        assert tokens.shape == (2, 4, 64) and tokens.dtype == torch.float32
        torch.testing.assert_close(backbone(x), tokens.mean(dim=1))
        with pytest.raises(ValueError, match="pool must be"):
            backbone(x, pool="max")


def test_images_fill_a_clip_or_a_tubelet():
    table = _backbone(num_frames=8, tubelet_size=2)
    rope = _backbone(num_frames=8, tubelet_size=2, positions="rope")
    assert (table.image_frames, rope.image_frames, _backbone().image_frames) == (8, 2, None)
    image = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert table.forward_features(image).shape == (1, 4 * 4, 64)
        assert rope.forward_features(image).shape == (1, 1 * 4, 64)


def test_inputs_that_do_not_tile_are_errors():
    with torch.no_grad(), pytest.raises(ValueError, match=r"not a multiple of the patch/tubelet size \(8, 8\)"):
        _backbone()(torch.randn(1, 3, 20, 16))


def test_spec_validation():
    with pytest.raises(ValueError, match="given together"):
        _backbone(num_frames=8)
    with pytest.raises(ValueError, match="video \\(tubelet\\) encoders only"):
        _backbone(positions="rope")
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        _backbone(in_chans=1)
