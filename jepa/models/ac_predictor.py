"""Action-conditioned predictor (V-JEPA 2-AC): block-causal transformer over [action, state, frame tokens] per frame.

Frame t contributes an action token (the action taken at t), an optional state token and its N
feature tokens; attention is block-causal over a sliding window (every token of frame t sees all
tokens of frames t - W + 1 .. t, W = ``max_frames``), and the outputs at frame t's feature tokens
predict frame t + 1's features. Positions: a learned embedding per token slot within a frame, and
rotary positions over the frame index inside attention. Rotary scores depend only on frame
differences, so a frame's keys and values never change as the window slides: rollouts decode
incrementally from a key/value cache and equal a full forward over every frame so far. (With depth
L, information reaches L * (W - 1) frames back, as in any sliding-window transformer; training clips
of at most W frames never see that, and a tiny recipe run showed no loss in rollout error for it.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.rope import RopeBlock, frame_rope_tables
from jepa.models.vit import init_weights


def block_causal_mask(frames: int, tokens_per_frame: int, window: int | None = None,
                      device: torch.device | None = None) -> torch.Tensor:
    """Boolean [L, L] (True = may attend) for L = frames * tokens_per_frame: frame t sees frames
    t - window + 1 .. t (all frames <= t when ``window`` is None)."""
    frame = torch.arange(frames, device=device).repeat_interleave(tokens_per_frame)
    lag = frame.view(-1, 1) - frame.view(1, -1)
    return (lag >= 0) & (lag < window) if window is not None else lag >= 0


class SlidingKVCache:
    """One layer's rotated keys and values of the last ``window`` frames: a ring buffer allocated once.

    Each :meth:`attend` takes one frame's queries, keys and values [B, heads, tokens, head_dim],
    writes the keys and values over the oldest frame and attends the queries over every cached frame
    (their order does not matter to attention). Slots not yet written are hidden by a -inf score
    bias rather than sliced off: softmax over rows shorter than 16 takes a slow path on CPU (2-7x),
    and matmul + softmax is about twice as fast as fused attention at these sizes.
    """

    def __init__(self, batch: int, heads: int, window: int, tokens: int, head_dim: int, *,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, heads, window, tokens, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)  # zeros: hidden slots stay finite (0 x NaN = NaN)
        self.values = torch.zeros_like(self.keys)
        self.bias = torch.full((window * tokens,), float("-inf"), dtype=dtype, device=device)
        self.window, self.tokens, self.frames = window, tokens, 0

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, n, d = q.shape
        if n != self.tokens:
            raise ValueError(f"the cache takes one frame of {self.tokens} tokens at a time, got {n}")
        slot = self.frames % self.window
        self.keys[:, :, slot] = k
        self.values[:, :, slot] = v
        self.frames += 1
        scores = torch.bmm((q * d ** -0.5).reshape(b * h, n, d), self.keys.view(b * h, -1, d).transpose(1, 2))
        if self.frames <= self.window:  # still filling: hide the slots not yet written
            self.bias[slot * n: (slot + 1) * n] = 0.0
            scores += self.bias
        return torch.bmm(scores.softmax(dim=-1), self.values.view(b * h, -1, d)).view(b, h, n, d)


def pool_tokens(tokens: torch.Tensor, grid: tuple[int, int], out: int) -> torch.Tensor:
    """Average-pool encoder tokens [B, h*w, D] on their grid to out x out tokens [B, out*out, D] (out=0: keep all)."""
    if out == 0:
        return tokens
    b, n, d = tokens.shape
    x = tokens.transpose(1, 2).reshape(b, d, *grid)
    return F.adaptive_avg_pool2d(x, out).flatten(2).transpose(1, 2)


def check_frames(feats: torch.Tensor, actions: torch.Tensor, num_tokens: int, feature_dim: int,
                 action_dim: int) -> None:
    """Any predictor's input: features [B, T, num_tokens, feature_dim] and actions [B, T, action_dim]."""
    if feats.ndim != 4 or feats.shape[2:] != (num_tokens, feature_dim):
        raise ValueError(f"features must be [B, T, {num_tokens}, {feature_dim}], got {tuple(feats.shape)} "
                         "(does the predictor match the encoder and pooling?)")
    b, t = feats.shape[:2]
    if actions.shape != (b, t, action_dim):
        raise ValueError(f"actions must be [B, T, {action_dim}] = [{b}, {t}, {action_dim}], got {tuple(actions.shape)}")


class ACPredictor(nn.Module):
    """feats [B, T, N, D], actions [B, T, A] (, state [B, T, S]) -> predicted next features [B, T, N, D]."""

    def __init__(self, *, feature_dim: int, action_dim: int, num_tokens: int, state_dim: int = 0,
                 embed_dim: int = 128, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 max_frames: int = 8) -> None:
        super().__init__()
        if embed_dim % num_heads or (embed_dim // num_heads) % 2:
            raise ValueError(f"embed_dim {embed_dim} must split into num_heads {num_heads} heads of even size "
                             "(rotary positions rotate channel pairs)")
        if min(feature_dim, action_dim, num_tokens, max_frames) < 1 or state_dim < 0:
            raise ValueError("feature_dim, action_dim, num_tokens and max_frames must be >= 1, state_dim >= 0")
        self.feature_dim, self.action_dim, self.state_dim = feature_dim, action_dim, state_dim
        self.num_tokens, self.max_frames = num_tokens, max_frames
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.tokens_per_frame = 1 + (state_dim > 0) + num_tokens
        self.action_embed = nn.Linear(action_dim, embed_dim)
        self.state_embed = nn.Linear(state_dim, embed_dim) if state_dim else None
        self.feature_embed = nn.Linear(feature_dim, embed_dim)
        self.slot_pos = nn.Parameter(torch.zeros(1, 1, self.tokens_per_frame, embed_dim))
        self.blocks = nn.ModuleList(RopeBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, feature_dim)
        init_weights(self, self.blocks)
        nn.init.trunc_normal_(self.slot_pos, std=0.02)

    def _check(self, feats: torch.Tensor, actions: torch.Tensor, state: torch.Tensor | None) -> None:
        check_frames(feats, actions, self.num_tokens, self.feature_dim, self.action_dim)
        b, t = feats.shape[:2]
        if (state is None) != (self.state_dim == 0) or (state is not None and state.shape != (b, t, self.state_dim)):
            raise ValueError(f"state must be [B, T, {self.state_dim}]" if self.state_dim else "this predictor takes no state")

    def forward(self, feats: torch.Tensor, actions: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Any T: frames beyond ``max_frames`` see only the last ``max_frames`` (the sliding window)."""
        self._check(feats, actions, state)
        b, t = feats.shape[:2]
        parts = [self.action_embed(actions).unsqueeze(2)]
        if self.state_embed is not None:
            parts.append(self.state_embed(state).unsqueeze(2))
        parts.append(self.feature_embed(feats))
        p = self.tokens_per_frame
        x = (torch.cat(parts, dim=2) + self.slot_pos).reshape(b, t * p, -1)  # [B, T * P, E]
        frame = torch.arange(t, device=feats.device).repeat_interleave(p)
        rope = frame_rope_tables(frame, self.head_dim)
        mask = block_causal_mask(t, p, self.max_frames, device=feats.device)
        for block in self.blocks:
            x = block(x, rope, attn_mask=mask)
        x = self.norm(x).reshape(b, t, p, -1)[:, :, p - self.num_tokens:]
        return self.head(x)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """Imagine H steps: context features [B, C, N, D] (C >= 1 observed frames), actions [B, C - 1 + H, A]
        (the actions after each context frame, then the H planned ones) -> predicted features [B, H, N, D]
        (with ``last_only``: the last of them, [B, 1, N, D])."""
        if self.state_dim:
            raise ValueError("rollout with a state token needs predicted states; use a predictor without state")
        b, c = context.shape[:2]
        h = actions.shape[1] - (c - 1)
        if h < 1:
            raise ValueError(f"{actions.shape[1]} actions for {c} context frames leave no step to imagine")
        if torch.is_grad_enabled():  # training: recompute every frame each step (autograd forbids in-place caches)
            frames = list(context.unbind(1))
            for step in range(c - 1, c - 1 + h):
                frames.append(self(torch.stack(frames, 1), actions[:, : step + 1])[:, -1])
            return frames[-1].unsqueeze(1) if last_only else torch.stack(frames[c:], 1)
        self._check(context, actions[:, :c], None)
        out = self._cached_rollout(context, actions, h)
        return out[:, -1:] if last_only else out

    def _cached_rollout(self, context: torch.Tensor, actions: torch.Tensor, h: int) -> torch.Tensor:
        """Incremental decoding: each step runs only the newest frame's tokens against the cached window."""
        b, c = context.shape[:2]
        caches = [SlidingKVCache(b, self.num_heads, self.max_frames, self.tokens_per_frame, self.head_dim,
                                 dtype=context.dtype, device=context.device) for _ in self.blocks]
        rotations = frame_rope_tables(torch.arange(c - 1 + h, device=context.device), self.head_dim)
        action_tokens = self.action_embed(actions) + self.slot_pos[0, 0, 0]  # [B, C - 1 + H, E], once for all steps
        x = torch.empty(b, self.tokens_per_frame, action_tokens.shape[-1], dtype=context.dtype, device=context.device)
        out = torch.empty(b, h, self.num_tokens, self.feature_dim, dtype=context.dtype, device=context.device)
        for frame in range(c - 1 + h):
            feats = context[:, frame] if frame < c else out[:, frame - c]
            x[:, 0] = action_tokens[:, frame]
            x[:, 1:] = self.feature_embed(feats) + self.slot_pos[0, 0, 1:]
            y, rope = x, rotations[frame]
            for block, cache in zip(self.blocks, caches):
                y = block(y, rope, cache=cache)
            if frame >= c - 1:
                out[:, frame - c + 1] = self.head(self.norm(y[:, 1:]))
        return out


def token_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., N, D] x 2 -> [..., N]: each token's L1 distance. The losses below weight tokens, not features, so
    they reduce over D first and multiply [B, T, N] weights (the two-rooms recipe's fp32 step: 148 ms instead
    of 168 ms, README)."""
    return (a - b).abs().sum(dim=-1)


def change_weights(real: torch.Tensor, imagined: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-token weights 1 + ``weight`` x change / the frame's mean change, the change being the larger of the
    real and the imagined one ([B, T, N] each, no gradient)."""
    change = torch.maximum(real, imagined)
    return 1 + weight * change / change.mean(dim=2, keepdim=True).clamp_min(1e-6)


def change_weighted_l1(pred: torch.Tensor, target: torch.Tensor, previous: torch.Tensor, weight: float) -> torch.Tensor:
    """L1 where each token counts 1 + ``weight`` x (how much it changed / the frame's mean change), its change
    being the larger of the real one and the predicted one.

    pred, target, previous [B, T, N, D]. Most tokens of a frame do not change (the wall), so a plain L1 is
    met by predicting "nothing moves"; on the two-rooms fine grid a plain L1 left a position probe reading the
    prediction 10.9 px off, worse than no change (4.6 px), and weight 10 brought it to 3.4 px (README).
    The predicted change counts too (no gradient through the weight) so that a move the model imagines where
    nothing moves (a dot pushed into a wall) costs as much as a move it misses: weighted by the real change
    alone, such an error counted about 1 / (1 + weight x N / k) as much (k moving tokens of N), and the grid
    predictor imagined the dot through the wall in 55 % of pushes (README).
    """
    return weighted_token_l1(token_l1(pred, target), token_l1(target, previous), pred, previous, weight)


def weighted_token_l1(err: torch.Tensor, real: torch.Tensor, pred: torch.Tensor, previous: torch.Tensor,
                      weight: float) -> torch.Tensor:
    """The change-weighted L1 from token errors ``err`` and real changes ``real`` [B, T, N] already computed
    (the rollout's drift term shares them); pred and previous [B, T, N, D] give the imagined change."""
    if weight:
        err = err * change_weights(real, token_l1(pred.detach(), previous), weight)
    return err.mean() / pred.shape[-1]


def ac_losses(model: nn.Module, feats: torch.Tensor, actions: torch.Tensor, rollout_steps: int,
              change_weight: float = 0.0, drift_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """Teacher forcing (every frame from the true past) + autoregressive rollout from the first frame, both L1
    (change-weighted with ``change_weight`` > 0, see :func:`change_weighted_l1`), + ``drift_weight`` x the
    plain L1 of the rollout.

    Why the drift term: the change weighting leaves the tokens where nothing moves about a tenth of the
    loss, and open loop they drift (on the two-rooms grid 40 x their true change after nine chunks, more
    than half of the energy the planner ranks by, README); the plain L1 over the rollout counts every
    token alike. The rollout's token errors and the real changes are computed once and shared by the terms.

    feats [B, T + 1, N, D] (T + 1 frames), actions [B, T, A]; ``model``: an ACPredictor or GridACPredictor.
    """
    real = token_l1(feats[:, 1:], feats[:, :-1])
    pred = model(feats[:, :-1], actions)
    teacher = weighted_token_l1(token_l1(pred, feats[:, 1:]), real, pred, feats[:, :-1], change_weight)
    terms = {"teacher_loss": teacher}
    loss = teacher
    if rollout_steps > 0:
        k = min(rollout_steps, actions.shape[1])
        pred = model.rollout(feats[:, :1], actions[:, :k])
        err = token_l1(pred, feats[:, 1: k + 1])
        terms["rollout_loss"] = weighted_token_l1(err, real[:, :k], pred, feats[:, :k], change_weight)
        loss = loss + terms["rollout_loss"]
        if drift_weight:
            terms["drift_loss"] = err.mean() / feats.shape[-1]
            loss = loss + drift_weight * terms["drift_loss"]
    terms["loss"] = loss
    return terms
