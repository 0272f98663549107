import torch

from jepa.models.pos_embed import sincos_2d
from jepa.models.predictor import Predictor


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
