"""Block-causal action-conditioned predictor: sliding-window causality, cached rollout = repeated full prediction,
losses, bad input."""

import pytest
import torch

from jepa.models.ac_predictor import ACPredictor, SlidingKVCache, ac_losses, block_causal_mask, pool_tokens


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: tests/conftest.py


def small(**kw):
    torch.manual_seed(0)
    args = dict(feature_dim=8, action_dim=2, num_tokens=3, embed_dim=16, depth=2, num_heads=2, max_frames=4)
    args.update(kw)
    return ACPredictor(**args).eval()


def test_mask_is_block_causal():
    m = block_causal_mask(3, 2)
    expected = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)


@pytest.mark.parametrize("state_dim", [0, 2])
def test_future_frames_and_actions_do_not_change_past_outputs(state_dim):
    model = small(state_dim=state_dim)
    feats, actions = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 2)
    state = torch.randn(2, 4, 2) if state_dim else None
    out = model(feats, actions, state)
    feats2, actions2 = feats.clone(), actions.clone()
    feats2[:, 2:] += 5
    actions2[:, 2:] -= 3
    out2 = model(feats2, actions2, state)
    assert torch.allclose(out[:, :2], out2[:, :2], atol=1e-5)
    assert not torch.allclose(out[:, 2:], out2[:, 2:], atol=1e-3)
    actions3 = actions.clone()
    actions3[:, 1] += 1  # the action at t conditions the prediction of t + 1
    assert not torch.allclose(model(feats, actions3, state)[:, 1], out[:, 1], atol=1e-4)


def test_sliding_window_mask_matches_formula():
    frames, p, window = 6, 3, 4
    m = block_causal_mask(frames, p, window)
    for i in range(frames * p):
        for j in range(frames * p):
            assert bool(m[i, j]) == (0 <= i // p - j // p < window), (i, j)
    assert torch.equal(block_causal_mask(3, 2, 3), block_causal_mask(3, 2))  # a window as long as the clip: no effect


def varied(**kw):
    """A small predictor with weights far from init: outputs are O(1), so agreement to 1e-5 means something."""
    model = small(**kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("context_frames", [1, 2])
def test_cached_rollout_equals_full_recomputation_each_step(context_frames):
    model = varied(depth=3, max_frames=3)
    c, h = context_frames, 9  # far past the 3-frame window
    context, actions = torch.randn(2, c, 3, 8), torch.randn(2, c - 1 + h, 2)
    with torch.no_grad():
        pred = model.rollout(context, actions)
        frames = list(context.unbind(1))
        for step in range(c - 1, c - 1 + h):  # every step: the whole forward over all frames so far, last output
            frames.append(model(torch.stack(frames, 1), actions[:, : step + 1])[:, -1])
    expected = torch.stack(frames[c:], 1)
    assert pred.shape == (2, h, 3, 8) and expected.abs().mean() > 0.1
    assert (pred - expected).abs().max() < 1e-5
    with torch.enable_grad():  # the training path (recomputing, autograd-safe) agrees with the cached one
        assert (model.rollout(context, actions) - expected).abs().max() < 1e-5
        assert (model.rollout(context, actions, last_only=True) - expected[:, -1:]).abs().max() < 1e-5
    with torch.no_grad():
        assert torch.equal(model.rollout(context, actions, last_only=True), pred[:, -1:])


def test_forward_slides_its_window_over_long_clips():
    """Depth 1: frame t sees exactly frames t - W + 1 .. t, so a long clip equals recomputing each window.
    Deeper: information from frame 0 reaches no further than depth * (W - 1) frames."""
    feats, actions = torch.randn(2, 9, 3, 8), torch.randn(2, 9, 2)
    one = varied(depth=1, max_frames=3)
    with torch.no_grad():
        full = one(feats, actions)
        windows = torch.stack([one(feats[:, max(0, t - 2): t + 1], actions[:, max(0, t - 2): t + 1])[:, -1]
                               for t in range(9)], 1)
    assert (full - windows).abs().max() < 1e-5
    deep = varied(depth=2, max_frames=3)
    changed = feats.clone()
    changed[:, 0] += 3
    with torch.no_grad():
        diff = (deep(feats, actions) - deep(changed, actions)).abs().amax(dim=(0, 2, 3))
    assert bool((diff[:5] > 1e-3).all()) and bool((diff[5:] == 0).all())


def test_kv_cache_is_a_fixed_ring_buffer():
    cache = SlidingKVCache(1, 1, 2, 2, 4, dtype=torch.float32, device=torch.device("cpu"))
    storage = cache.keys.data_ptr()
    q = torch.zeros(1, 1, 2, 4)  # zero queries: uniform attention, so the output is the mean cached value
    for frame in range(5):
        v = torch.full((1, 1, 2, 4), float(frame))
        out = cache.attend(q, torch.randn(1, 1, 2, 4), v)
        assert torch.allclose(out, torch.full_like(out, (frame + max(frame - 1, 0)) / min(frame + 1, 2)))
    assert cache.keys.data_ptr() == storage and cache.keys.shape == (1, 1, 2, 2, 4)
    with pytest.raises(ValueError, match="one frame"):
        cache.attend(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4))


def test_losses_train_a_linear_world():
    model = small(num_tokens=1, feature_dim=2, max_frames=5).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(80):
        actions = torch.rand(32, 4, 2, generator=g) - 0.5
        start = torch.rand(32, 1, 1, 2, generator=g)
        feats = torch.cat([start, start + actions.cumsum(1).unsqueeze(2)], 1)  # position integrates actions
        terms = ac_losses(model, feats, actions, rollout_steps=2)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = first if first is not None else float(terms["loss"].detach())
    assert set(terms) == {"teacher_loss", "rollout_loss", "loss"}
    assert float(terms["loss"].detach()) < 0.25 * first


def test_pool_tokens_and_bad_input():
    tokens = torch.arange(16.0).view(1, 16, 1)
    pooled = pool_tokens(tokens, (4, 4), 2)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pool_tokens(tokens, (4, 4), 0) is tokens
    model = small()
    with pytest.raises(ValueError, match="match the encoder"):
        model(torch.randn(1, 2, 3, 9), torch.randn(1, 2, 2))
    with pytest.raises(ValueError, match="actions must be"):
        model(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="even size"):
        small(embed_dim=12, num_heads=4)
    with pytest.raises(ValueError, match="no state"):
        model(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 2), torch.randn(1, 2, 2))
