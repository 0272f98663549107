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


def test_resolve_follows_the_choice_and_the_timed_speedup(monkeypatch):
    import jepa.onednn_linear as module

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert module.resolve_onednn_linear(True, cpu) and not module.resolve_onednn_linear(False, cpu)
    assert not module.resolve_onednn_linear(True, cuda) and not module.resolve_onednn_linear("auto", cuda)
    for speedup, want in ((1.9, True), (module.ONEDNN_MIN_SPEEDUP, True), (0.8, False)):
        monkeypatch.setattr(module, "onednn_linear_speedup", lambda s=speedup: s)
        assert module.resolve_onednn_linear("auto", cpu) is want
    with pytest.raises(ValueError, match="onednn_linear"):
        module.resolve_onednn_linear("yes", cpu)


def test_speedup_is_timed_on_one_thread_and_restores_the_thread_count():
    from jepa.onednn_linear import onednn_linear_speedup

    threads = torch.get_num_threads()
    speedup = onednn_linear_speedup.__wrapped__(rows=64, features=(32, 48), repeats=2)
    assert 0.05 < speedup < 20 and torch.get_num_threads() == threads
