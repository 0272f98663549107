"""The learned world model wrapper: encoding, frameskip chunking and padding, ensemble cost."""

import pytest
import torch

from jepa.models.ac_predictor import ACPredictor
from jepa.models.vit import resolve_size, vit_2d
from jepa.planning.world_model import FrameEncoder, LatentWorldModel, blurred_l1, latent_cost


def tiny(pool=1, predictors=2, feature_dim=32):
    torch.manual_seed(0)
    vit = vit_2d(resolve_size("vit_tiny", embed_dim=32, depth=1, num_heads=2), img_size=65, patch_size=13, in_chans=2)
    enc = FrameEncoder(vit, mean=(0.0, 0.0), std=(1.0, 1.0), img_size=65, pool=pool)
    preds = [ACPredictor(feature_dim=feature_dim, action_dim=6, num_tokens=pool * pool, embed_dim=16, depth=1,
                         num_heads=2, max_frames=3) for _ in range(predictors)]
    return enc, preds


def test_encode_is_layer_normed_and_rollout_chunks_actions():
    enc, preds = tiny()
    model = LatentWorldModel(enc, preds, frameskip=3)
    z = model.encode(torch.rand(2, 2, 65, 65))
    assert z.shape == (2, 1, 32)
    assert torch.allclose(z.mean(-1), torch.zeros(2, 1), atol=1e-5)
    actions = torch.randn(4, 7, 2)  # 7 steps -> padded to 9 = 3 predictor steps
    out = model.rollout(z[:1], actions)
    assert out.shape == (4, 3, 2, 1, 32)
    padded = torch.cat([actions, torch.zeros(4, 2, 2)], 1).reshape(4, 3, 6)
    with torch.no_grad():
        expected = preds[1].rollout(z[:1].unsqueeze(1).expand(4, 1, 1, 32), padded)
    assert torch.allclose(out[:, :, 1], expected, atol=1e-5)
    assert torch.equal(model.rollout(z[:1], actions, last_only=True), out[:, -1:])
    single = LatentWorldModel(enc, preds[:1], frameskip=3)
    assert torch.equal(single.rollout(z[:1], actions), out[:, :, :1])


def test_latent_cost_matches_formula():
    pred = torch.randn(5, 3, 2, 4, 8)  # [S, steps, ensemble, tokens, dim]
    goal = torch.randn(1, 4, 8)
    final = latent_cost("final")(pred, goal)
    assert torch.allclose(final, (pred[:, -1].mean(1) - goal).abs().mean(dim=(1, 2)), atol=1e-6)
    summed = latent_cost("summed")(pred, goal)
    assert torch.allclose(summed, (pred.mean(2) - goal.unsqueeze(1)).abs().mean(dim=(2, 3)).sum(1), atol=1e-5)
    spread = latent_cost("final", disagreement=2.0)(pred, goal) - final
    assert torch.allclose(spread, 2.0 * pred[:, -1].std(dim=1).mean(dim=(1, 2)), atol=1e-5)
    spread = latent_cost("summed", disagreement=0.5)(pred, goal) - summed
    assert torch.allclose(spread, 0.5 * pred.std(dim=2).mean(dim=(2, 3)).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match="final"):
        latent_cost("mean")


def test_mismatched_predictor_is_refused():
    enc, _ = tiny()
    _, wrong = tiny(feature_dim=16)
    with pytest.raises(ValueError, match="does not match the encoder"):
        LatentWorldModel(enc, wrong, frameskip=3)
    enc2, preds = tiny()
    with pytest.raises(ValueError, match="multiple of frameskip"):
        LatentWorldModel(enc2, preds, frameskip=4)


def box_average(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Reference blur of [B, side, side, D] grids: each token the mean of the tokens inside the grid within
    size // 2 rows and columns of it, by explicit slicing."""
    r, side = size // 2, grid.shape[1]
    out = torch.empty_like(grid)
    for i in range(side):
        for j in range(side):
            out[:, i, j] = grid[:, max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(dim=(1, 2))
    return out


@pytest.mark.parametrize("size", [1, 3, 5, 7, 9])
def test_blurred_l1_is_the_mean_absolute_box_average_inside_the_grid(size):
    tokens = torch.randn(2, 3, 121, 4)  # [..., 11 x 11 grid row-major, D]
    grid = tokens.view(6, 11, 11, 4)
    expected = box_average(grid, size).abs().mean(dim=(1, 2, 3)).view(2, 3)
    torch.testing.assert_close(blurred_l1(tokens, size), expected)
    with pytest.raises(ValueError, match="square"):
        blurred_l1(torch.randn(1, 6, 3), 3)


def test_blurred_energy_keeps_growing_with_the_distance_to_the_goal():
    """A one-hot dot on a 15 x 15 grid, 1 to 9 tokens right of the goal: the plain L1 is flat once the dot
    leaves the goal's token; the blurred one keeps growing (until the widest blur reaches the border)."""
    def frame(col):
        f = torch.zeros(1, 225, 1)
        f[0, 7 * 15 + col] = 1.0
        return f
    goal = frame(3)
    pred = torch.stack([frame(c) for c in range(4, 13)]).view(9, 1, 1, 225, 1)  # [S, steps, M, N, D]
    plain = latent_cost("final")(pred, goal)
    blurred = latent_cost("final", blur=(1, 3, 5, 9))(pred, goal)
    assert torch.allclose(plain, plain[0].expand(9))
    assert (blurred[1:] > blurred[:-1]).all()
    expected = sum((box_average(pred[:, -1, 0].view(9, 15, 15, 1), k) - box_average(goal.view(1, 15, 15, 1), k))
                   .abs().mean(dim=(1, 2, 3)) for k in (1, 3, 5, 9))
    assert torch.allclose(blurred, expected, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        latent_cost("final", blur=(2,))


def test_autocast_rollout_runs_the_predictors_in_bf16_and_returns_fp32():
    """The same predictors imagining in bf16: their layers see bf16 (a hook records it), the predictions come
    back fp32 and within bf16 rounding of the fp32 rollout; the modules are shared, not copied."""
    enc, preds = tiny()
    model = LatentWorldModel(enc, preds, frameskip=3)
    fast = model.with_autocast(torch.bfloat16)
    assert fast.predictors[0] is preds[0] and fast.encoder is enc and model.autocast is None
    seen = []
    hook = preds[0].blocks[0].mlp.fc1.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    z = model.encode(torch.rand(1, 2, 65, 65))
    actions = torch.randn(4, 9, 2)
    ref = model.rollout(z, actions)
    assert seen and set(seen) == {torch.float32}
    seen.clear()
    out = fast.rollout(z, actions)
    hook.remove()
    assert torch.bfloat16 in seen
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.allclose(out, ref, atol=0.1, rtol=0.05)
    assert not torch.equal(out, ref)
