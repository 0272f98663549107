import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jepa.onednn_linear import OneDNNLinear, onednn_available, onednn_linear, use_onednn_linear

pytestmark = pytest.mark.skipif(not onednn_available(), reason="this PyTorch has no oneDNN linear op")


@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_equal_f_linear(bias):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 24, dtype=torch.float64).float().requires_grad_()
    w = torch.randn(40, 24).requires_grad_()
    b = torch.randn(40).requires_grad_() if bias else None
    grad = torch.randn(3, 7, 40)
    leaves = [t for t in (x, w, b) if t is not None]
    got = onednn_linear(x, w, b)
    got_grads = torch.autograd.grad(got, leaves, grad)
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    want_grads = torch.autograd.grad(want, [t for t in (x, w, b) if t is not None], grad.double(), allow_unused=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want.float(), atol=1e-5, rtol=1e-5)  # fp32 accuracy against fp64
    for g, r in zip(got_grads, want_grads):
        torch.testing.assert_close(g, r.float(), atol=1e-4, rtol=1e-5)


def test_only_needed_gradients_are_computed():
    x, w = torch.randn(5, 8), torch.randn(4, 8, requires_grad=True)
    (gw,) = torch.autograd.grad(onednn_linear(x, w).sum(), [w])
    torch.testing.assert_close(gw, torch.ones(5, 4).t() @ x)


def test_falls_back_under_autocast_and_for_other_dtypes():
    x, w = torch.randn(5, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert onednn_linear(x, w).dtype == torch.bfloat16  # autocast's own bf16 path
    torch.testing.assert_close(onednn_linear(x.double(), w.double()), F.linear(x.double(), w.double()))


def test_switching_modules_keeps_parameters_and_state_dict():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2), nn.LayerNorm(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    x = torch.randn(3, 8)
    want = model(x)
    assert use_onednn_linear(model) == 2
    assert isinstance(model[0], OneDNNLinear) and list(model.parameters()) == params
    torch.testing.assert_close(model.state_dict(), before)
    torch.testing.assert_close(model(x), want, atol=1e-6, rtol=1e-5)
