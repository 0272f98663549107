import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer as TimmViT

from jepa.models.vit import VIT_SIZES, gather_tokens, resolve_size, vit_2d, vit_3d


def _timm_twin(ours, img_size, patch_size, in_chans, size):
    timm_model = TimmViT(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=0, global_pool="avg",
        embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads, mlp_ratio=size.mlp_ratio,
        qkv_bias=True, class_token=False, fc_norm=False,
    )
    timm_model.load_state_dict(ours.state_dict(), strict=True)
    return timm_model


def test_matches_timm_vision_transformer_with_same_weights():
    torch.manual_seed(0)
    size = resolve_size("vit_small", depth=3)
    ours = vit_2d(size, img_size=64, patch_size=16, in_chans=3).eval()
    theirs = _timm_twin(ours, 64, 16, 3, size).eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs.forward_features(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(x).mean(dim=1), theirs(x), atol=1e-5, rtol=0)


def test_keep_runs_only_the_kept_tokens():
    torch.manual_seed(0)
    model = vit_2d(resolve_size("vit_tiny", depth=2), img_size=32, patch_size=8, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    keep = torch.tensor([[0, 5, 15], [1, 2, 3]])
    tokens = gather_tokens(model.patch_embed(x) + model.pos_embed, keep)
    for block in model.blocks:
        tokens = block(tokens)
    with torch.no_grad():
        torch.testing.assert_close(model(x, keep=keep), model.norm(tokens))
    # the kept tokens attend only to each other: changing a dropped patch leaves them unchanged
    y = x.clone()
    y[:, :, 24:, 24:] += 5.0  # token 15 is dropped for image 1 only
    with torch.no_grad():
        torch.testing.assert_close(model(y, keep=keep)[1], model(x, keep=keep)[1])


@pytest.mark.parametrize("name, timm_name", [
    ("vit_tiny", "vit_tiny_patch16_224"), ("vit_small", "vit_small_patch16_224"),
    ("vit_base", "vit_base_patch16_224"), ("vit_large", "vit_large_patch16_224"),
    ("vit_huge", "vit_huge_patch14_224"), ("vit_giant", "vit_giant_patch14_224"),
])
def test_named_sizes_match_timm(name, timm_name):
    with torch.device("meta"):
        ref = timm.create_model(timm_name, pretrained=False)
    size = VIT_SIZES[name]
    assert (size.embed_dim, size.depth, size.num_heads) == (ref.embed_dim, len(ref.blocks), ref.blocks[0].attn.num_heads)
    assert size.mlp_ratio == pytest.approx(ref.blocks[0].mlp.fc1.out_features / ref.embed_dim)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="unknown ViT size"):
        resolve_size("vit_enormous")
    with pytest.raises(ValueError, match="not divisible"):
        resolve_size("vit_tiny", num_heads=5)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        vit_2d(VIT_SIZES["vit_tiny"], img_size=30, patch_size=4, in_chans=1)


def test_tubelet_embedding_of_a_repeated_image_equals_2d_embedding_with_time_summed_kernel():
    torch.manual_seed(0)
    size = resolve_size("vit_tiny", depth=1)
    video = vit_3d(size, img_size=32, num_frames=4, patch_size=8, tubelet_size=2, in_chans=3)
    image = vit_2d(size, img_size=32, patch_size=8, in_chans=3)
    with torch.no_grad():
        image.patch_embed.proj.weight.copy_(video.patch_embed.proj.weight.sum(dim=2))
        image.patch_embed.proj.bias.copy_(video.patch_embed.proj.bias)
    x = torch.randn(2, 3, 32, 32)
    clip = x.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # one tubelet of the same frame
    with torch.no_grad():
        torch.testing.assert_close(video.patch_embed(clip), image.patch_embed(x), atol=1e-5, rtol=0)


def test_video_vit_runs_kept_tokens_in_t_h_w_order():
    torch.manual_seed(0)
    model = vit_3d(resolve_size("vit_tiny", depth=1), img_size=16, num_frames=4, patch_size=8, tubelet_size=2,
                   in_chans=1).eval()
    assert model.num_tokens == 2 * 2 * 2
    clip = torch.zeros(1, 1, 4, 16, 16)
    clip[:, :, 2:4, 8:16, 0:8] = 1.0  # second tubelet, bottom-left patch = token (1, 1, 0) = 6
    tokens = model.patch_embed(clip)
    changed = (tokens - model.patch_embed(torch.zeros_like(clip))).abs().sum(-1).squeeze(0)
    assert changed.nonzero().flatten().tolist() == [6]
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        vit_3d(resolve_size("vit_tiny"), img_size=16, num_frames=3, patch_size=8, tubelet_size=2, in_chans=1)
