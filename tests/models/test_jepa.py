import torch

from jepa.losses import JEPALoss
from jepa.masks import MaskSet
from jepa.models.jepa import JEPA
from jepa.models.pos_embed import sincos_2d
from jepa.models.predictor import Predictor
from jepa.models.vit import resolve_size, vit_2d


def _model(num_mask_tokens=1):
    torch.manual_seed(0)
    encoder = vit_2d(resolve_size("vit_tiny", embed_dim=32, depth=1, num_heads=2), img_size=16, patch_size=4, in_chans=1)
    predictor = Predictor(encoder_dim=32, pos_embed=sincos_2d(16, (4, 4)), embed_dim=16, depth=1, num_heads=2,
                          num_mask_tokens=num_mask_tokens)
    return JEPA(encoder=encoder, predictor=predictor, loss=JEPALoss(kind="l2"))


def test_loss_is_prediction_error_against_layer_normed_target_features():
    model = _model()
    x = torch.randn(2, 1, 16, 16)
    masks = MaskSet(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), torch.tensor([[[8, 9]], [[10, 11]]]))
    out = model(x, [masks])
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(model.target_encoder(x), (32,))
        target = torch.stack([h[0, [8, 9]], h[1, [10, 11]]]).unsqueeze(1)
        pred = model.predictor(model.encoder(x, keep=masks.context), masks.context, masks.targets)
    torch.testing.assert_close(out["loss"], ((pred - target) ** 2).mean())
    torch.testing.assert_close(out["target_pooled"], model.target_encoder(x).mean(dim=1))


def test_mask_sets_are_averaged_and_only_the_context_encoder_and_predictor_get_gradients():
    model = _model(num_mask_tokens=2)
    x = torch.randn(2, 1, 16, 16)
    a = MaskSet(torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[[8]], [[9]]]))
    b = MaskSet(torch.tensor([[0, 5, 6, 7], [1, 2, 3, 4]]), torch.tensor([[[12, 13]], [[14, 15]]]))
    both = model(x, [a, b])
    expected = (_single_set_loss(model, x, a, 0) + _single_set_loss(model, x, b, 1)) / 2
    torch.testing.assert_close(both["loss"], expected)
    both["loss"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    assert model.predictor.mask_tokens[1].grad is not None


def _single_set_loss(model, x, mask_set, mask_index):
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(model.target_encoder(x), (32,))
    b, m, k = mask_set.targets.shape
    target = torch.gather(h, 1, mask_set.targets.reshape(b, m * k, 1).expand(-1, -1, 32)).reshape(b, m, k, 32)
    pred = model.predictor(model.encoder(x, keep=mask_set.context), mask_set.context, mask_set.targets, mask_index)
    return ((pred - target) ** 2).mean()
