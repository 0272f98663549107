import pytest
import torch

from jepa.models.pos_embed import sincos_2d
from jepa.models.predictor import SharedContextPredictor, shared_context_mask
from jepa.models.shared_context import SharedContextBlock, block_attention
from jepa.perf import checkpoint_activations, set_fused_attention, set_split_attention


def _masked_reference(q, k, v, nc, m):
    """Dense softmax attention in float64 with the shared-context mask as -inf scores."""
    allowed = shared_context_mask(nc, m, (q.shape[2] - nc) // m, device=q.device)
    scores = (q.double() @ k.double().transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1) @ v.double()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("nc, m, k", [(5, 3, 2), (7, 1, 4), (1, 4, 1)])
def test_block_attention_equals_the_mask_rows_of_dense_masked_attention(fused, nc, m, k):
    torch.manual_seed(0)
    block = SharedContextBlock(16, 2)
    block.attn.fused_attn = fused
    q, k_, v = torch.randn(3, 2, 2, nc + m * k, 8).unbind(0)
    want = _masked_reference(q, k_, v, nc, m).float()[:, :, nc:]
    got = block_attention(q[:, :, nc:], k_[:, :, nc:], v[:, :, nc:], k_[:, :, :nc], v[:, :, :nc], m, block.attn)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _predictor_and_inputs():
    torch.manual_seed(0)
    pred = SharedContextPredictor(encoder_dim=32, pos_embed=sincos_2d(16, (4, 4)), embed_dim=16, depth=3,
                                  num_heads=2)
    context = torch.randn(2, 5, 32, requires_grad=True)
    context_idx = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    targets = torch.tensor([[[10, 11], [12, 13], [14, 15]], [[0, 1], [2, 3], [10, 15]]])
    return pred, context, context_idx, targets


def _output_and_grads(pred, context, context_idx, targets):
    pred.zero_grad()
    context.grad = None
    out = pred(context, context_idx, targets)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in pred.named_parameters()}
    return out.detach(), context.grad.clone(), grads


@pytest.mark.parametrize("fused", [False, True])
def test_split_predictor_computes_the_masked_pass_with_its_gradients(fused):
    pred, *inputs = _predictor_and_inputs()
    set_fused_attention(pred, fused)
    assert set_split_attention(pred, False) == 1
    masked = _output_and_grads(pred, *inputs)
    set_split_attention(pred, True)
    split = _output_and_grads(pred, *inputs)
    torch.testing.assert_close(split, masked, atol=1e-5, rtol=1e-4)


def test_split_predictor_blocks_are_checkpointed(monkeypatch):
    pred, *inputs = _predictor_and_inputs()
    calls, act = [], pred.predictor_blocks[0].mlp.act
    monkeypatch.setattr(act, "forward", lambda x, run=act.forward: calls.append(1) or run(x))  # hooks skip recompute
    plain = _output_and_grads(pred, *inputs)
    forward_calls = len(calls)
    assert checkpoint_activations(pred) == 3
    checkpointed = _output_and_grads(pred, *inputs)
    assert len(calls) == 3 * forward_calls  # the forward, then its recomputation in backward
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-6)
