import pytest

from jepa.build import build_masks
from jepa.config import ConfigError, load_config


def test_build_masks_resolves_token_multiple_from_the_token_grid():
    assert build_masks(load_config(None, [])).token_multiple == 1  # the default: 7 x 7 tokens
    big = ["data.img_size=224", "encoder.patch_size=16"]
    assert build_masks(load_config(None, big)).token_multiple == 8
    assert build_masks(load_config(None, [*big, "masks.token_multiple=1"])).token_multiple == 1
    assert build_masks(load_config(None, ["masks.token_multiple=2"])).token_multiple == 2
    video = ["data.source=moving-digits", "data.img_size=64", "encoder.patch_size=16", "video.num_frames=4"]
    small_clips = build_masks(load_config(None, video))
    assert type(small_clips).__name__ == "MultiBlock3DMasks" and small_clips.token_multiple == 1  # 2 x 4 x 4 tokens
    assert build_masks(load_config(None, [*video, "data.img_size=224"])).token_multiple == 1  # 2 x 14 x 14
    clips = [*video, "data.img_size=224", "video.num_frames=16"]
    assert build_masks(load_config(None, clips)).token_multiple == 1  # 8 x 14 x 14: counts step by 8 anyway


def test_build_masks_fixes_the_context_of_image_masks_only():
    big = ["data.img_size=224", "encoder.patch_size=16", "masks.context_tokens=64"]
    assert build_masks(load_config(None, big)).context_tokens == 64
    video = ["data.source=moving-digits", "data.img_size=64", "encoder.patch_size=16", "video.num_frames=4"]
    for masks in ("multiblock", "tube"):
        with pytest.raises(ConfigError, match="masks.context_tokens applies to image masks"):
            build_masks(load_config(None, [*video, f"video.masks={masks}", "masks.context_tokens=12"]))
