import torch

from jepa.models.pos_embed import sincos_2d
from jepa.models.predictor import Predictor, SharedContextPredictor, shared_context_mask


def _predictor():
    torch.manual_seed(0)
    return Predictor(encoder_dim=32, pos_embed=sincos_2d(16, (4, 4)), embed_dim=16, depth=2, num_heads=2).eval()


def test_each_target_block_is_its_own_pass():
    pred = _predictor()
    context = torch.randn(2, 5, 32)
    context_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [10, 15]]])
    with torch.no_grad():
        together = pred(context, context_idx, targets)
        for m in range(3):
            alone = pred(context, context_idx, targets[:, m : m + 1])
            torch.testing.assert_close(together[:, m : m + 1], alone, atol=1e-6, rtol=0)
    assert together.shape == (2, 3, 2, 32)


def test_prediction_depends_on_target_position_and_context():
    pred = _predictor()
    context = torch.randn(1, 4, 32)
    idx = torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        a = pred(context, idx, torch.tensor([[[10]]]))
        b = pred(context, idx, torch.tensor([[[11]]]))
        c = pred(context + 1.0, idx, torch.tensor([[[10]]]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_each_mask_set_has_its_own_mask_token():
    torch.manual_seed(0)
    pred = Predictor(encoder_dim=32, pos_embed=sincos_2d(16, (4, 4)), embed_dim=16, depth=1, num_heads=2,
                     num_mask_tokens=2).eval()
    context, idx, targets = torch.randn(1, 3, 32), torch.tensor([[0, 1, 2]]), torch.tensor([[[9, 10]]])
    with torch.no_grad():
        assert not torch.allclose(pred(context, idx, targets, mask_index=0), pred(context, idx, targets, mask_index=1))
        pred.mask_tokens[1].copy_(pred.mask_tokens[0])
        torch.testing.assert_close(pred(context, idx, targets, mask_index=0), pred(context, idx, targets, mask_index=1))


def _shared(depth: int = 2) -> SharedContextPredictor:
    torch.manual_seed(0)
    return SharedContextPredictor(encoder_dim=32, pos_embed=sincos_2d(16, (4, 4)), embed_dim=16, depth=depth,
                                  num_heads=2).eval()


def _blockwise_reference(pred: Predictor, context, context_idx, targets):
    """Independent computation with unmasked blocks only: the context stack alone, then each block's mask
    tokens layer by layer on [context_l, block_l] with full attention (their rows see context + own block)."""
    b, m, k = targets.shape
    pos = pred.predictor_pos_embed.expand(b, -1, -1)
    ctx = pred.predictor_embed(context) + torch.gather(pos, 1, context_idx[..., None].expand(-1, -1, 16))
    outs = []
    for j in range(m):
        c = ctx
        q = pred.mask_tokens[0] + torch.gather(pos, 1, targets[:, j, :, None].expand(-1, -1, 16))
        for block in pred.predictor_blocks:
            q = block(torch.cat([c, q], dim=1))[:, -k:]
            c = block(c)
        outs.append(pred.predictor_proj(pred.predictor_norm(q)))
    return torch.stack(outs, dim=1)


def test_shared_context_predictor_equals_blockwise_reference():
    pred = _shared()
    context = torch.randn(2, 5, 32)
    context_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [10, 15]]])
    with torch.no_grad():
        got = pred(context, context_idx, targets)
        want = _blockwise_reference(pred, context, context_idx, targets)
    assert got.shape == (2, 3, 2, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_shared_context_block_prediction_ignores_other_blocks():
    pred = _shared()
    context, idx = torch.randn(1, 4, 32), torch.tensor([[0, 1, 2, 3]])
    with torch.no_grad():
        a = pred(context, idx, torch.tensor([[[10, 11], [12, 13]]]))
        b = pred(context, idx, torch.tensor([[[10, 11], [5, 6]]]))
    torch.testing.assert_close(a[:, 0], b[:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_shared_context_predictor_loads_reference_predictor_weights():
    reference, shared = _predictor(), _shared()
    shared.load_state_dict(reference.state_dict())  # same parameter names: checkpoints move between the two
    torch.testing.assert_close(shared.state_dict(), reference.state_dict())


def test_shared_context_mask_layout():
    allowed = shared_context_mask(2, 2, 1, device=torch.device("cpu"))
    expected = torch.tensor([
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 0, 1],
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)
