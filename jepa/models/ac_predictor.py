"""Action-conditioned predictor (V-JEPA 2-AC): block-causal transformer over [action, state, frame tokens] per frame.

Frame t contributes an action token (the action taken at t), an optional state token and its N
feature tokens; attention is block-causal (every token of frame t sees all tokens of frames <= t),
and the outputs at frame t's feature tokens predict frame t + 1's features. Positions are learned:
one embedding per frame slot in the context window and one per token slot within a frame.
Rollouts longer than the window slide it (the model always sees at most ``max_frames`` frames,
exactly as in training), and write into a preallocated buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.vit import init_weights, make_blocks


def block_causal_mask(frames: int, tokens_per_frame: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean [L, L] (True = may attend) for L = frames * tokens_per_frame: frame t sees frames <= t."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    return frame.view(-1, 1) >= frame.view(1, -1)


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], out: int) -> torch.Tensor:
    """Average-pool encoder tokens [B, h*w, D] on their grid to out x out tokens [B, out*out, D] (out=0: keep all)."""
    if out == 0:
        return tokens
    b, n, d = tokens.shape
    x = tokens.transpose(1, 2).reshape(b, d, *grid)
    return F.adaptive_avg_pool2d(x, out).flatten(2).transpose(1, 2)


class ACPredictor(nn.Module):
    """feats [B, T, N, D], actions [B, T, A] (, state [B, T, S]) -> predicted next features [B, T, N, D]."""

    def __init__(self, *, feature_dim: int, action_dim: int, num_tokens: int, state_dim: int = 0,
                 embed_dim: int = 128, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 max_frames: int = 8) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if min(feature_dim, action_dim, num_tokens, max_frames) < 1 or state_dim < 0:
            raise ValueError("feature_dim, action_dim, num_tokens and max_frames must be >= 1, state_dim >= 0")
        self.feature_dim, self.action_dim, self.state_dim = feature_dim, action_dim, state_dim
        self.num_tokens, self.max_frames = num_tokens, max_frames
        self.tokens_per_frame = 1 + (state_dim > 0) + num_tokens
        self.action_embed = nn.Linear(action_dim, embed_dim)
        self.state_embed = nn.Linear(state_dim, embed_dim) if state_dim else None
        self.feature_embed = nn.Linear(feature_dim, embed_dim)
        self.frame_pos = nn.Parameter(torch.zeros(1, max_frames, 1, embed_dim))
        self.slot_pos = nn.Parameter(torch.zeros(1, 1, self.tokens_per_frame, embed_dim))
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, feature_dim)
        init_weights(self, self.blocks)
        nn.init.trunc_normal_(self.frame_pos, std=0.02)
        nn.init.trunc_normal_(self.slot_pos, std=0.02)
        self.register_buffer("_mask", block_causal_mask(max_frames, self.tokens_per_frame), persistent=False)

    def _check(self, feats: torch.Tensor, actions: torch.Tensor, state: torch.Tensor | None) -> None:
        b, t = feats.shape[:2]
        if feats.ndim != 4 or feats.shape[2:] != (self.num_tokens, self.feature_dim):
            raise ValueError(f"features must be [B, T, {self.num_tokens}, {self.feature_dim}], got {tuple(feats.shape)} "
                             "(does the predictor match the encoder and pooling?)")
        if actions.shape != (b, t, self.action_dim):
            raise ValueError(f"actions must be [B, T, {self.action_dim}] = [{b}, {t}, {self.action_dim}], "
                             f"got {tuple(actions.shape)}")
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed the predictor's window of {self.max_frames}")
        if (state is None) != (self.state_dim == 0) or (state is not None and state.shape != (b, t, self.state_dim)):
            raise ValueError(f"state must be [B, T, {self.state_dim}]" if self.state_dim else "this predictor takes no state")

    def forward(self, feats: torch.Tensor, actions: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        self._check(feats, actions, state)
        b, t = feats.shape[:2]
        parts = [self.action_embed(actions).unsqueeze(2)]
        if self.state_embed is not None:
            parts.append(self.state_embed(state).unsqueeze(2))
        parts.append(self.feature_embed(feats))
        x = torch.cat(parts, dim=2) + self.frame_pos[:, :t] + self.slot_pos  # [B, T, P, E]
        p = self.tokens_per_frame
        x = x.reshape(b, t * p, -1)
        mask = self._mask[: t * p, : t * p]
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x).reshape(b, t, p, -1)[:, :, p - self.num_tokens:]
        return self.head(x)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Imagine H steps: context features [B, C, N, D] (C >= 1 observed frames), actions [B, C - 1 + H, A]
        (the actions after each context frame, then the H planned ones) -> predicted features [B, H, N, D]."""
        if self.state_dim:
            raise ValueError("rollout with a state token needs predicted states; use a predictor without state")
        b, c = context.shape[:2]
        h = actions.shape[1] - (c - 1)
        if h < 1:
            raise ValueError(f"{actions.shape[1]} actions for {c} context frames leave no step to imagine")
        if torch.is_grad_enabled():  # training: a list, since autograd forbids writing into saved inputs
            frames = list(context.unbind(1))
            for step in range(c - 1, c - 1 + h):
                lo = max(0, step + 1 - self.max_frames)
                frames.append(self(torch.stack(frames[lo: step + 1], 1), actions[:, lo: step + 1])[:, -1])
            return torch.stack(frames[c:], 1)
        buffer = torch.empty(b, c + h, self.num_tokens, self.feature_dim, dtype=context.dtype, device=context.device)
        buffer[:, :c] = context
        for step in range(c - 1, c - 1 + h):
            lo = max(0, step + 1 - self.max_frames)
            buffer[:, step + 1] = self(buffer[:, lo: step + 1], actions[:, lo: step + 1])[:, -1]
        return buffer[:, c:]


def ac_losses(model: ACPredictor, feats: torch.Tensor, actions: torch.Tensor, rollout_steps: int) -> dict[str, torch.Tensor]:
    """Teacher forcing (every frame from the true past) + autoregressive rollout from the first frame, both L1.

    feats [B, T + 1, N, D] (T + 1 frames), actions [B, T, A].
    """
    teacher = F.l1_loss(model(feats[:, :-1], actions), feats[:, 1:])
    terms = {"teacher_loss": teacher}
    loss = teacher
    if rollout_steps > 0:
        k = min(rollout_steps, actions.shape[1])
        pred = model.rollout(feats[:, :1], actions[:, :k])
        terms["rollout_loss"] = F.l1_loss(pred, feats[:, 1: k + 1])
        loss = loss + terms["rollout_loss"]
    terms["loss"] = loss
    return terms
