import pytest

from jepa.build import build_masks, static_shapes
from jepa.config import ConfigError, load_config
from jepa.masks import MultiBlock3DMasks
from jepa.perf import StaticShapes


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


def test_build_masks_fixes_the_context_of_images_and_each_clip_mask_sets_counts():
    big = ["data.img_size=224", "encoder.patch_size=16", "masks.context_tokens=64"]
    assert build_masks(load_config(None, big)).context_tokens == 64
    assert static_shapes(load_config(None, big)) == StaticShapes(context=True, targets=False)  # blocks vary in size
    assert static_shapes(load_config(None, [])) == StaticShapes(context=False, targets=False)
    video = ["data.source=moving-digits", "data.img_size=64", "encoder.patch_size=16", "video.num_frames=8"]
    clips = load_config(None, [*video, "masks.context_tokens=auto"])
    assert build_masks(clips).fixed_counts == MultiBlock3DMasks(grid=(4, 4, 4), fixed_counts="auto").fixed_counts
    assert static_shapes(clips) == StaticShapes(context=True, targets=True)
    assert build_masks(load_config(None, video)).fixed_counts is None
    assert static_shapes(load_config(None, video)) == StaticShapes(context=False, targets=False)
    assert static_shapes(load_config(None, [*video, "video.masks=tube"])) == StaticShapes(context=True, targets=True)
    with pytest.raises(ConfigError, match="on clips it takes only 'auto' or null"):
        build_masks(load_config(None, [*video, "masks.context_tokens=12"]))
    with pytest.raises(ConfigError, match="does nothing with video.masks=tube"):
        build_masks(load_config(None, [*video, "video.masks=tube", "masks.context_tokens=auto"]))
