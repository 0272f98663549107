"""The narrow predictor: context tokens + mask tokens at target positions -> predicted target features."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from jepa.models.shared_context import SharedContextBlock
from jepa.models.vit import gather_tokens, init_weights, make_blocks


class Predictor(nn.Module):
    """Predicts target-encoder features at target positions from context-encoder tokens.

    Each target block gets its own pass (the context repeated, one learned mask
    token plus the block's positions appended), as in I-JEPA; all blocks run as
    one batch of size B * M. Several mask sets (V-JEPA) each have their own
    mask token, picked by ``mask_index``.
    """

    block_class: type[Block] = Block

    def __init__(
        self,
        *,
        encoder_dim: int,
        pos_embed: torch.Tensor,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_mask_tokens: int = 1,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"predictor embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.predictor_embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, 1, embed_dim)) for _ in range(num_mask_tokens))
        self.register_buffer("predictor_pos_embed", pos_embed.reshape(1, -1, embed_dim).clone())
        self.predictor_blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, self.block_class)
        self.predictor_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.predictor_proj = nn.Linear(embed_dim, encoder_dim)
        init_weights(self, self.predictor_blocks)
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, mask_index: int = 0
    ) -> torch.Tensor:
        """context [B, Nc, D], context_idx [B, Nc], target_idx [B, M, K] -> predictions [B, M, K, D]."""
        b, m, k = target_idx.shape
        pos = self.predictor_pos_embed.expand(b, -1, -1)
        x = self.predictor_embed(context) + gather_tokens(pos, context_idx)
        x = x.repeat_interleave(m, dim=0)
        queries = self.mask_tokens[mask_index] + gather_tokens(pos, target_idx.reshape(b, m * k)).reshape(b * m, k, -1)
        x = torch.cat([x, queries], dim=1)
        for block in self.predictor_blocks:
            x = block(x)
        out = self.predictor_proj(self.predictor_norm(x[:, -k:]))
        return out.reshape(b, m, k, -1)


class SharedContextPredictor(Predictor):
    """The predictor in one pass per sample: the context once, followed by every target block's mask tokens.

    An attention mask lets the context attend only to itself and each block's
    mask tokens only to the context and their own block, so a block's prediction
    depends on the same inputs as in :class:`Predictor` (context and its own
    positions) while the context tokens are computed once instead of M times.
    It is a different function from :class:`Predictor`, not a re-ordering of it:
    there the context also attends to the block's mask tokens. The weights are
    the same, so checkpoints move freely between the two.

    ``split_attention`` (``perf.split_attention``) keeps the context and the
    mask tokens as two streams and computes the attention block by block
    instead of as one masked matrix (:mod:`jepa.models.shared_context`): the
    same function with about half the attention work.
    """

    block_class = SharedContextBlock
    split_attention: bool = True

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor, mask_index: int = 0
    ) -> torch.Tensor:
        """context [B, Nc, D], context_idx [B, Nc], target_idx [B, M, K] -> predictions [B, M, K, D]."""
        b, m, k = target_idx.shape
        nc = context_idx.shape[1]
        pos = self.predictor_pos_embed.expand(b, -1, -1)
        x = self.predictor_embed(context) + gather_tokens(pos, context_idx)
        queries = self.mask_tokens[mask_index] + gather_tokens(pos, target_idx.reshape(b, m * k))
        if self.split_attention and len(self.predictor_blocks):
            last = len(self.predictor_blocks) - 1
            for i, block in enumerate(self.predictor_blocks):
                x, queries = block(x, targets=queries, blocks=m, last=i == last)
            x = queries
        else:
            x = torch.cat([x, queries], dim=1)
            allowed = shared_context_mask(nc, m, k, device=x.device)
            for block in self.predictor_blocks:
                x = block(x, attn_mask=allowed)
            x = x[:, nc:]
        out = self.predictor_proj(self.predictor_norm(x))
        return out.reshape(b, m, k, -1)


def shared_context_mask(nc: int, m: int, k: int, *, device: torch.device) -> torch.Tensor:
    """Boolean attention mask [L, L] (L = nc + m*k, True = may attend): context -> context; block j -> context + block j."""
    group = torch.cat([torch.full((nc,), -1, device=device), torch.arange(m, device=device).repeat_interleave(k)])
    return (group[None, :] == -1) | (group[:, None] == group[None, :])
