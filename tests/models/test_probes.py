"""Tests for the attentive pooler and classifier: shapes, order invariance, attention maths."""

import math

import pytest
import torch

from jepa.models.probes import AttentiveClassifier, AttentivePooler, CrossAttention


def test_output_shapes() -> None:
    tokens = torch.randn(3, 7, 32)
    assert AttentivePooler(32, num_heads=4)(tokens).shape == (3, 32)
    assert AttentivePooler(32, num_heads=4, num_queries=3)(tokens).shape == (3, 96)
    assert AttentivePooler(32, num_heads=4, num_queries=3, reduce="mean")(tokens).shape == (3, 32)
    assert AttentivePooler(32, num_heads=4, num_queries=3).out_dim == 96
    assert AttentiveClassifier(32, 5, num_heads=4, depth=1)(tokens).shape == (3, 5)


def test_without_blocks_token_order_does_not_matter() -> None:
    torch.manual_seed(0)
    pooler = AttentivePooler(32, num_heads=4, num_queries=2).eval()
    tokens = torch.randn(2, 9, 32)
    shuffled = tokens[:, torch.randperm(9)]
    torch.testing.assert_close(pooler(shuffled), pooler(tokens), atol=1e-5, rtol=1e-5)


def test_cross_attention_matches_hand_written_softmax_attention() -> None:
    torch.manual_seed(0)
    dim, heads, batch, n, q_len = 24, 3, 2, 6, 2
    attn = CrossAttention(dim, num_heads=heads)
    queries, tokens = torch.randn(batch, q_len, dim), torch.randn(batch, n, dim)
    head_dim = dim // heads
    q = (queries @ attn.q.weight.T + attn.q.bias).view(batch, q_len, heads, head_dim).transpose(1, 2)
    kv = tokens @ attn.kv.weight.T + attn.kv.bias
    k = kv[..., :dim].reshape(batch, n, heads, head_dim).transpose(1, 2)
    v = kv[..., dim:].reshape(batch, n, heads, head_dim).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(batch, q_len, dim)
    expected = out @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(queries, tokens), expected, atol=1e-5, rtol=1e-5)


def test_depth_adds_self_attention_blocks() -> None:
    assert len(AttentivePooler(32, num_heads=4).blocks) == 0
    deep = AttentivePooler(32, num_heads=4, depth=2)
    shallow_params = sum(p.numel() for p in AttentivePooler(32, num_heads=4).parameters())
    assert len(deep.blocks) == 2 and sum(p.numel() for p in deep.parameters()) > shallow_params


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dim": 30, "num_heads": 4}, "divisible by num_heads"),
    ({"dim": 32, "num_heads": 0}, "num_heads must be a positive int"),
    ({"dim": 32, "num_heads": 4, "depth": -1}, "depth must be an int >= 0"),
    ({"dim": 32, "num_heads": 4, "num_queries": 0}, "num_queries must be a positive int"),
    ({"dim": 32, "num_heads": 4, "reduce": "max"}, "reduce must be"),
])
def test_bad_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttentivePooler(**kwargs)


def test_classifier_rejects_too_few_classes_and_bad_tokens() -> None:
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        AttentiveClassifier(32, 1, num_heads=4)
    with pytest.raises(ValueError, match="tokens must be"):
        AttentivePooler(32, num_heads=4)(torch.randn(2, 32))
