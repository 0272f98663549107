"""The local grid predictor: one rule everywhere (shift equivariance), Markov rollouts, and it learns a moving dot."""

import pytest
import torch
import torch.nn.functional as F

from jepa.models.ac_predictor import ac_losses, change_weighted_l1
from jepa.models.grid_predictor import GridACPredictor, _conv_gelu


def small(**kw):
    torch.manual_seed(0)
    args = dict(feature_dim=4, action_dim=2, num_tokens=49, width=8, depth=2, kernel=3) | kw
    model = GridACPredictor(**args)
    torch.nn.init.normal_(model.out.weight, std=0.1)  # not the identity it starts as
    return model


def as_grid(tokens, side=7):
    return tokens.transpose(-1, -2).reshape(*tokens.shape[:-2], tokens.shape[-1], side, side)


def test_a_shifted_input_gives_the_shifted_output_away_from_the_border():
    model = small(num_tokens=169).eval()
    grid = torch.zeros(1, 1, 4, 13, 13)
    grid[0, 0, :, 4, 4] = torch.randn(4)  # a blob inside the grid
    moved = torch.roll(grid, shifts=(2, 3), dims=(-2, -1))  # the same blob 2 rows down, 3 columns right
    action = torch.randn(1, 1, 2)
    with torch.no_grad():
        out = as_grid(model(grid.flatten(3).transpose(2, 3), action), 13)
        out_moved = as_grid(model(moved.flatten(3).transpose(2, 3), action), 13)
    # depth 2 with 3 x 3 kernels sees 2 tokens around: rows/cols 2..6 hold the blob's whole response, and they
    # and their shifted copies (rows 4..8, cols 5..9) are 2 or more tokens from the zero-padded border
    assert torch.allclose(out[..., 2:7, 2:7], out_moved[..., 4:9, 5:10], atol=1e-6)
    assert not torch.allclose(out, grid, atol=1e-3)  # it does change the frame


@pytest.mark.parametrize("dilation", [(), (1, 2), (2, 3)])
def test_a_token_reaches_the_offsets_its_dilated_kernels_add_up_to(dilation):
    """One changed token changes the output exactly at the offsets that sums of one offset per layer reach (each
    layer: 0 through its residual, or d x {-1, 0, 1} in each axis). Dilations (2, 3) skip +-4: the gaps."""
    model = small(num_tokens=169, dilation=dilation).eval()
    grid = torch.randn(1, 1, 169, 4)
    poked = grid.clone()
    poked[0, 0, 6 * 13 + 6] += 1.0  # the centre token
    action = torch.randn(1, 1, 2)
    with torch.no_grad():
        changed = (as_grid(model(poked, action) - model(grid, action), 13)[0, 0].abs().sum(0) > 1e-6)
    reach = {0}
    for d in dilation or (1, 1):
        reach = {r + d * i for r in reach for i in (-1, 0, 1)}
    expected = torch.zeros(13, 13, dtype=torch.bool)
    for dy in reach:
        for dx in reach:
            expected[6 + dy, 6 + dx] = True
    assert torch.equal(changed, expected)


def stepped(model, context, actions):
    """Reference rollout: one forward (a whole step, D-wide) per planned action from the last context frame."""
    frame, frames = context[:, -1:], []
    for k in range(context.shape[1], actions.shape[1] + 1):
        frame = model(frame, actions[:, k - 1:k])
        frames.append(frame[:, 0])
    return torch.stack(frames, 1)


def test_rollout_is_repeated_single_steps_from_the_last_context_frame():
    model = small().eval()
    context = torch.randn(3, 2, 49, 4)
    actions = torch.randn(3, 1 + 4, 2)  # one action after the first context frame, then four planned
    with torch.no_grad():
        out = model.rollout(context, actions)
        expected = stepped(model, context, actions)
    assert out.shape == (3, 4, 49, 4)
    assert torch.allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("dilation", [(), (1, 2)])
def test_last_frame_in_the_body_width_is_whole_steps(dilation):
    """The last frame computed in the body's width (the output and next input 1 x 1 convolutions folded into
    one W x W map) equals whole steps, the output bias included, with the same gradients."""
    model = small(dilation=dilation)
    torch.nn.init.normal_(model.out.bias, std=0.1)
    context, actions = torch.randn(3, 2, 49, 4), torch.randn(3, 1 + 5, 2)
    last = model.rollout(context, actions, last_only=True)[:, 0]
    expected = stepped(model, context, actions)[:, -1]
    torch.testing.assert_close(last, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the planner's path: the fused convolution + GELU, sums in place
        torch.testing.assert_close(model.rollout(context, actions, last_only=True)[:, 0], expected,
                                   atol=1e-5, rtol=1e-5)
        shared = context[:1].expand(3, -1, -1, -1)  # one start for every sample, as a planner passes it
        torch.testing.assert_close(model.rollout(shared, actions, last_only=True)[:, 0],
                                   stepped(model, shared.contiguous(), actions)[:, -1], atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(last)
    grads = torch.autograd.grad((last * weights).sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad((expected * weights).sum(), list(model.parameters()))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_last_frame_in_bf16_is_closer_to_fp32_than_whole_steps_in_bf16():
    """Under autocast only the body runs in bf16; the frame's state stays fp32 (whole steps round the frame to
    bf16 for their input convolution): the rollout is closer to fp32 whole steps than bf16 whole steps are."""
    model = small(num_tokens=169, depth=3).eval()
    torch.nn.init.normal_(model.out.bias, std=0.1)
    context, actions = torch.randn(4, 1, 169, 4), torch.randn(4, 9, 2)
    with torch.no_grad():
        exact = stepped(model, context, actions)[:, -1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model.rollout(context, actions, last_only=True)[:, 0]
            stepped_bf16 = stepped(model, context, actions)[:, -1]
    change = (exact - context[:, -1]).abs().mean()
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().mean() < (stepped_bf16 - exact).abs().mean()
    assert (fast - exact).abs().mean() < 0.02 * change


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_convolution_and_gelu_is_the_plain_pair(dtype, tol, dilation):
    """The oneDNN convolution with GELU as its post-op (used without a gradient) against conv2d then gelu in
    fp32; with a gradient the plain pair runs and the gradient flows."""
    x = torch.randn(6, 8, 13, 13).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(8, 8, 3, padding=dilation, dilation=dilation).to(memory_format=torch.channels_last)
    expected = F.gelu(conv(x))
    weight, bias = conv.weight.to(dtype), conv.bias.to(dtype)
    with torch.no_grad():
        out = _conv_gelu(x.to(dtype), weight, bias, conv.padding, conv.dilation)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=tol)
    x.requires_grad_(True)
    grad, = torch.autograd.grad(_conv_gelu(x, conv.weight, conv.bias, conv.padding, conv.dilation).sum(), x)
    expected_grad, = torch.autograd.grad(F.gelu(conv(x)).sum(), x)
    torch.testing.assert_close(grad, expected_grad)


def test_step_matches_the_convolutions_written_out_in_the_default_layout():
    """The channels-last step (input convolution split into features + per-sample action bias) computes
    1x1 conv of [features, broadcast action] -> FiLM'd residual convs -> 1x1 conv out, added to the frame."""
    model = small(num_tokens=169, depth=3).eval()
    feats, action = torch.randn(5, 169, 4), torch.randn(5, 2)
    grid = as_grid(feats, 13).contiguous()
    h = F.conv2d(torch.cat([grid, action.view(5, 2, 1, 1).expand(-1, -1, 13, 13)], 1),
                 model.inp.weight.contiguous(), model.inp.bias)
    for film, conv in zip(model.film, model.body):
        scale, shift = film(action).view(5, -1, 1, 1).chunk(2, dim=1)
        h = h + F.gelu(F.conv2d(h * (1 + scale) + shift, conv.weight.contiguous(), conv.bias, padding=1))
    expected = grid + F.conv2d(h, model.out.weight.contiguous(), model.out.bias)
    with torch.no_grad():
        out = model(feats[:, None], action[:, None])[:, 0]
    assert torch.allclose(as_grid(out, 13), expected, atol=1e-5)
    assert model.to_grid(feats).is_contiguous(memory_format=torch.channels_last)  # a view, no copy
    assert torch.equal(model.from_grid(model.to_grid(feats)), feats)


def test_starts_as_the_identity():
    model = GridACPredictor(feature_dim=4, action_dim=2, num_tokens=9)
    feats = torch.randn(2, 3, 9, 4)
    assert torch.equal(model(feats, torch.randn(2, 3, 2)), feats)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_losses_teach_it_to_move_a_dot_by_the_action(dtype):
    """A dot on a 7 x 7 grid moves one token along the action's sign (x then y), stopping at the edge.
    Tokens are one layer-normed random vector at the dot and another elsewhere. Trained under bf16 autocast
    (the recipe's ``world_model.precision`` on a CPU with native bf16) it learns the move as in fp32."""
    model = small(feature_dim=8, width=16).train()
    dot, empty = torch.nn.functional.layer_norm(torch.randn(2, 8, generator=torch.Generator().manual_seed(2)), (8,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def batch(n):
        pos = torch.randint(0, 7, (n, 2), generator=g)
        steps = torch.randint(-1, 2, (n, 3, 2), generator=g)
        frames = [pos]
        for k in range(3):
            frames.append((frames[-1] + steps[:, k]).clamp(0, 6))
        feats = empty.repeat(n, 4, 49, 1)
        for k, p in enumerate(frames):
            feats[torch.arange(n), k, p[:, 0] * 7 + p[:, 1]] = dot
        return feats, steps.float()

    for _ in range(200):
        feats, actions = batch(64)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            terms = ac_losses(model, feats, actions, rollout_steps=2, change_weight=10.0)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    feats, actions = batch(256)
    with torch.no_grad():
        pred = model.rollout(feats[:, :1], actions[:, :2])
    where = lambda f: (f @ (dot - empty)).argmax(-1)  # noqa: E731  the token most like the dot
    hit = (where(pred) == where(feats[:, 1:3])).float().mean()
    copy = (where(feats[:, :1]) == where(feats[:, 1:3])).float().mean()
    assert copy < 0.25 and hit > 0.6  # where the dot is, one and two steps ahead (0.83 measured in 200 steps)


def test_change_weighted_l1_matches_its_formula():
    g = torch.Generator().manual_seed(1)
    pred, target, prev = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    assert torch.allclose(change_weighted_l1(pred, target, prev, 0.0), (pred - target).abs().mean())
    change = torch.maximum((target - prev).abs().sum(-1), (pred - prev).abs().sum(-1))  # [2, 3, 5]
    weight = 1 + 10 * change / change.mean(-1, keepdim=True)
    expected = ((pred - target).abs() * weight.unsqueeze(-1)).mean()
    assert torch.allclose(change_weighted_l1(pred, target, prev, 10.0), expected)


def test_change_weighted_l1_gradient_matches_the_per_feature_formula():
    """Reduced over features before the per-token weight, the loss has the gradient of the formula written per
    feature (weight broadcast over D), the weight itself carrying none."""
    g = torch.Generator().manual_seed(3)
    target, prev = torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g)
    pred = torch.randn(2, 3, 5, 4, generator=g, requires_grad=True)
    change_weighted_l1(pred, target, prev, 10.0).backward()
    ours, pred.grad = pred.grad, None
    change = torch.maximum((target - prev).abs().sum(-1), (pred.detach() - prev).abs().sum(-1))
    weight = 1 + 10 * change / change.mean(-1, keepdim=True)
    ((pred - target).abs() * weight.unsqueeze(-1)).mean().backward()
    assert torch.allclose(ours, pred.grad)


def test_change_weighting_counts_an_imagined_move_like_a_real_one():
    """A blocked step (nothing changes) that the model predicts as a move: the moved token counts 1 + w x N / 1
    times, as a real move's token would, not once (the weighting by the real change alone let the grid predictor
    walk through walls, README)."""
    n, d, e, w = 10, 4, 0.3, 10.0
    prev = torch.zeros(1, 1, n, d)
    target = prev.clone()  # blocked: nothing changes
    pred = prev.clone()
    pred[0, 0, 3] = e  # the model moves one token
    loss = change_weighted_l1(pred, target, prev, w)
    assert torch.allclose(loss, torch.tensor(e * (1 + w * n) / n))  # error e on one token of n, weight 1 + w n
    moved = prev.clone()
    moved[0, 0, 3] = e  # the mirror case: the token really moves and the model predicts nothing
    assert torch.allclose(change_weighted_l1(prev, moved, prev, w), loss)


def test_drift_term_is_the_plain_l1_of_the_rollout():
    model = small()
    g = torch.Generator().manual_seed(2)
    feats, actions = torch.randn(3, 4, 49, 4, generator=g), torch.randn(3, 3, 2, generator=g)
    base = ac_losses(model, feats, actions, rollout_steps=2, change_weight=10.0)
    terms = ac_losses(model, feats, actions, rollout_steps=2, change_weight=10.0, drift_weight=5.0)
    with torch.no_grad():
        drift = (model.rollout(feats[:, :1], actions[:, :2]) - feats[:, 1:3]).abs().mean()
    assert "drift_loss" not in base and torch.allclose(terms["drift_loss"], drift)
    assert torch.allclose(terms["loss"], base["loss"] + 5.0 * drift)


def test_bad_input():
    with pytest.raises(ValueError, match="square token grid"):
        GridACPredictor(feature_dim=4, action_dim=2, num_tokens=12)
    with pytest.raises(ValueError, match="kernel odd"):
        GridACPredictor(feature_dim=4, action_dim=2, num_tokens=9, kernel=2)
    for dilation in ((1,), (1, 0)):
        with pytest.raises(ValueError, match="one value >= 1 per layer"):
            GridACPredictor(feature_dim=4, action_dim=2, num_tokens=9, depth=2, dilation=dilation)
    model = small()
    with pytest.raises(ValueError, match="match the encoder"):
        model(torch.randn(1, 2, 49, 5), torch.randn(1, 2, 2))
    with pytest.raises(ValueError, match="actions must be"):
        model(torch.randn(1, 2, 49, 4), torch.randn(1, 2, 3))
    with pytest.raises(ValueError, match="no step to imagine"):
        model.rollout(torch.randn(1, 3, 49, 4), torch.randn(1, 2, 2))
