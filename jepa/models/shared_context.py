"""The shared-context predictor pass computed as two token streams instead of one masked sequence.

In :class:`~jepa.models.predictor.SharedContextPredictor` the sequence is the
context (``nc`` tokens) followed by ``m`` target blocks of ``k`` mask tokens;
the context attends only to itself and each block only to the context and
itself. A dense attention with that mask computes ``(nc + m k)^2`` scores of
which about half are blanked. Here the context and the mask tokens are kept as
two tensors: the context rows are one ``nc x nc`` attention, each block's rows
one ``k x (nc + k)`` attention, with no mask. The blanked scores weigh exactly
zero after the softmax, so the result is the same function up to the order of
floating-point sums. The context's outputs of the last block are never read,
so there the context only provides keys and values.

:class:`SharedContextBlock` is timm's ``Block`` with that path added, so the
parameters (and checkpoints) are those of the plain pass, and module hooks
(activation checkpointing) see every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn


def _heads(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, H, N, hd] of tokens x [B, N, D] (with the layer's q/k norms)."""
    b, n, _ = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn: nn.Module) -> torch.Tensor:
    """Unmasked softmax(q k^T / sqrt(hd)) v with ``attn``'s kernel choice (fused SDPA or explicit math)."""
    if attn.fused_attn:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    return attn.attn_drop(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)) @ v


def block_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor,
                    blocks: int, attn: nn.Module) -> torch.Tensor:
    """Mask tokens' attention: q, k, v [B, H, m k, hd] of ``blocks`` blocks, each attending to the context's
    keys / values kc, vc [B, H, nc, hd] and to its own block -> [B, H, m k, hd]."""
    b, h, n, hd = q.shape
    nc, kk = kc.shape[2], n // blocks
    q5, k5, v5 = (t.reshape(b, h, blocks, kk, hd) for t in (q, k, v))
    if attn.fused_attn:
        keys = torch.cat([kc.unsqueeze(2).expand(b, h, blocks, nc, hd), k5], dim=3)
        values = torch.cat([vc.unsqueeze(2).expand(b, h, blocks, nc, hd), v5], dim=3)
        out = _attention(q5.reshape(b, h * blocks, kk, hd), keys.reshape(b, h * blocks, nc + kk, hd),
                         values.reshape(b, h * blocks, nc + kk, hd), attn)
        return out.reshape(b, h, n, hd)
    q = q * attn.scale
    to_context = (q @ kc.transpose(-2, -1)).reshape(b, h, blocks, kk, nc)  # one product for all blocks
    to_block = q.reshape(b, h, blocks, kk, hd) @ k5.transpose(-2, -1)
    if torch.compiler.is_compiling():
        p_context, p_block = _two_part_softmax(to_context, to_block)
        p_context, p_block = attn.attn_drop(p_context), attn.attn_drop(p_block)
    else:
        probs = attn.attn_drop(torch.cat([to_context, to_block], dim=-1).softmax(dim=-1))
        p_context, p_block = probs.split([nc, kk], dim=-1)
    return p_context.reshape(b, h, n, nc) @ vc + (p_block @ v5).reshape(b, h, n, hd)


def _two_part_softmax(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of ``softmax(cat([a, b], -1))`` without building the concatenation.

    Used under ``torch.compile``: inductor (torch 2.15, CPU) compiled the concatenate-softmax-split form
    with wrong value gradients (the forward was right; tests/models/test_shared_context.py has the
    case). Eagerly the concatenation is faster (20 against 24 ms for one layer's forward and backward).
    """
    top = torch.maximum(a.amax(-1, keepdim=True), b.amax(-1, keepdim=True)).detach()
    ea, eb = (a - top).exp(), (b - top).exp()
    total = ea.sum(-1, keepdim=True) + eb.sum(-1, keepdim=True)
    return ea / total, eb / total


def _project(attn: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """[B, H, N, hd] heads -> [B, N, D] through the layer's output projection."""
    b, _, n, _ = out.shape
    return attn.proj_drop(attn.proj(attn.norm(out.transpose(1, 2).reshape(b, n, -1))))


def shared_context_block(block: Block, context: torch.Tensor, targets: torch.Tensor, blocks: int, *,
                         last: bool = False) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A timm pre-LN ``Block`` on context [B, nc, D] and ``blocks`` target blocks of mask tokens
    targets [B, m k, D] -> (context, targets); with ``last`` the context is not computed (None)."""
    attn = block.attn
    if getattr(attn, "gate", None) is not None:
        raise ValueError("shared-context attention does not support gated attention")
    qc, kc, vc = _heads(attn, block.norm1(context))
    q, k, v = _heads(attn, block.norm1(targets))
    targets = targets + block.drop_path1(block.ls1(_project(attn, block_attention(q, k, v, kc, vc, blocks, attn))))
    targets = targets + block.drop_path2(block.ls2(block.mlp(block.norm2(targets))))
    if last:
        return None, targets
    context = context + block.drop_path1(block.ls1(_project(attn, _attention(qc, kc, vc, attn))))
    return context + block.drop_path2(block.ls2(block.mlp(block.norm2(context)))), targets


class SharedContextBlock(Block):
    """timm's ``Block``; given ``targets`` and ``blocks``, it runs :func:`shared_context_block` on the two
    streams instead of attention over one (masked) sequence."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False, *,
                targets: torch.Tensor | None = None, blocks: int = 1,
                last: bool = False) -> torch.Tensor | tuple[torch.Tensor | None, torch.Tensor]:
        if targets is None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        return shared_context_block(self, x, targets, blocks, last=last)
