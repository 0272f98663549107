import math

import pytest
import torch
import torch.nn.functional as F

from jepa.losses import JEPALoss, covariance_loss, effective_rank, feature_std, prediction_loss, variance_loss


def test_variance_loss_matches_written_formula():
    z = torch.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, 0.1], [4.0, 1.0, 0.2]])
    # unbiased variances: 4, 0, 0.01
    expected = (max(0.0, 1 - math.sqrt(4 + 1e-4)) + (1 - math.sqrt(1e-4)) + (1 - math.sqrt(0.01 + 1e-4))) / 3
    assert variance_loss(z).item() == pytest.approx(expected, rel=1e-6)


def test_covariance_loss_matches_written_formula():
    z = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 6.0]])
    # columns centred: [-1, 0, 1], [-1, -2, 3]; cov_01 = (1 + 0 + 3) / 2 = 2
    assert covariance_loss(z).item() == pytest.approx(2 * 2.0**2 / 2)
    assert covariance_loss(torch.randn(4096, 3) * torch.tensor([1.0, 5.0, 0.1])).item() < 0.05


def test_effective_rank_of_rank_k_matrix_is_about_k():
    torch.manual_seed(0)
    for k in (1, 4, 16):
        basis = torch.linalg.qr(torch.randn(64, k))[0].T  # k orthonormal directions
        z = torch.randn(2000, k) @ basis
        assert effective_rank(z).item() == pytest.approx(k, rel=0.1)
    assert effective_rank(torch.ones(100, 8) * 3).item() < 1.5  # a constant is not rank


def test_feature_std():
    z = torch.randn(10000, 8) * 2
    assert feature_std(z).item() == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("kind, ref", [("smooth_l1", F.smooth_l1_loss), ("l1", F.l1_loss), ("l2", F.mse_loss)])
def test_prediction_loss_kinds(kind, ref):
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    assert prediction_loss(a, b, kind).item() == pytest.approx(ref(a, b).item())


def test_jepa_loss_combines_terms_with_coefficients():
    torch.manual_seed(0)
    pred, target, context = torch.randn(4, 2, 3, 8), torch.randn(4, 2, 3, 8), torch.randn(4, 5, 8)
    terms = JEPALoss(var_coeff=2.0, cov_coeff=0.5)(pred, target, context)
    pooled = context.mean(dim=1)
    expected = F.smooth_l1_loss(pred, target) + 2.0 * variance_loss(pooled) + 0.5 * covariance_loss(pooled)
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(JEPALoss()(pred, target, context)) == {"loss", "pred_loss"}
    with pytest.raises(ValueError):
        JEPALoss(kind="huber")
