import pytest
import torch

from jepa.models.pos_embed import sincos_2d
from jepa.models.predictor import SharedContextPredictor, shared_context_mask
from jepa.models.shared_context import SharedContextBlock, _two_part_softmax, block_attention
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


def test_two_part_softmax_is_the_softmax_of_the_concatenation():
    a, b = torch.randn(3, 5, 7) * 30, torch.randn(3, 5, 2) * 30  # large scores: the shift matters
    want = torch.cat([a, b], dim=-1).softmax(dim=-1).split([7, 2], dim=-1)
    torch.testing.assert_close(_two_part_softmax(a, b), want)


def test_compiled_math_block_attention_has_the_reference_gradients():
    """Under inductor (torch 2.15, CPU) the concatenate-softmax-split form got the value gradients wrong by
    more than 100 % at these sizes (20 context tokens, 4 blocks of 2); compiled, the two-part softmax is used."""
    torch.manual_seed(0)
    block = SharedContextBlock(16, 2)
    block.attn.fused_attn = False
    nc, m, k = 20, 4, 2
    inputs = [torch.randn(2, 2, n, 8, dtype=torch.float64) for n in (m * k, m * k, m * k, nc, nc)]

    def reference(q, k_, v, kc, vc):
        full = [torch.cat([c, t], dim=2) for c, t in ((torch.zeros_like(kc), q), (kc, k_), (vc, v))]
        return _masked_reference(*full, nc, m)[:, :, nc:]

    leaves = [t.clone().requires_grad_() for t in inputs]
    reference(*leaves).square().sum().backward()
    want = [t.grad.float() for t in leaves]
    leaves = [t.float().requires_grad_() for t in inputs]
    # The loss inside the graph: compiled alone, block_attention's gradients were right.
    compiled = torch.compile(lambda *x: block_attention(*x, m, block.attn).square().sum(), fullgraph=True)
    compiled(*leaves).backward()
    for got, w in zip((t.grad for t in leaves), want):
        torch.testing.assert_close(got, w, atol=1e-4, rtol=1e-4)


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
