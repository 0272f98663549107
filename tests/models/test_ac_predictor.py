"""Block-causal action-conditioned predictor: causality, rollout = repeated prediction, losses, bad input."""

import pytest
import torch

from jepa.models.ac_predictor import ACPredictor, ac_losses, block_causal_mask, pool_tokens


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


def test_rollout_feeds_predictions_back_and_slides_window():
    model = small(max_frames=3)
    context, actions = torch.randn(2, 1, 3, 8), torch.randn(2, 6, 2)
    with torch.no_grad():
        pred = model.rollout(context, actions)
        frames = [context[:, 0]]
        for t in range(6):
            lo = max(0, t + 1 - 3)
            frames.append(model(torch.stack(frames[lo:t + 1], 1), actions[:, lo:t + 1])[:, -1])
    assert pred.shape == (2, 6, 3, 8)
    assert torch.allclose(pred, torch.stack(frames[1:], 1), atol=1e-5)
    with torch.enable_grad():  # the training path (list-based) agrees with the preallocated one
        assert torch.allclose(model.rollout(context, actions), pred, atol=1e-5)


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
    assert float(terms["loss"]) < 0.25 * first


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
    with pytest.raises(ValueError, match="window"):
        model(torch.randn(1, 5, 3, 8), torch.randn(1, 5, 2))
    with pytest.raises(ValueError, match="no state"):
        model(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 2), torch.randn(1, 2, 2))
