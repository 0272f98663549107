"""A local action-conditioned predictor: convolutions over the encoder's token grid, no absolute positions.

The transformer predictor (ac_predictor.py) mixes all tokens of a frame with a learned embedding per
token slot, so it can learn a different rule at every place. A sampling planner finds the places
where that rule is wrong (on the two-rooms task: plans that walk through the wall 10-40 px from the
door in imagination only, README). This predictor applies one rule everywhere: each layer is a
``kernel`` x ``kernel`` convolution over the token grid, and the action chunk scales and shifts every
layer's channels (FiLM), which lets the action decide which way features move. With a token grid fine
enough that the dot moves between tokens (5 px patches on the 65 px frame), what it learns at one
stretch of wall holds along all of it.

It is Markov (the next frame from the current one) and keeps the transformer predictor's interface
(``forward`` over [B, T, N, D] frames, ``rollout`` from context frames), so the world model, training
loop and evaluation take either.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jepa.models.ac_predictor import check_frames


class GridACPredictor(nn.Module):
    """feats [B, T, N, D] (N = side x side tokens, row-major), actions [B, T, A] -> next features [B, T, N, D]."""

    def __init__(self, *, feature_dim: int, action_dim: int, num_tokens: int, width: int = 32, depth: int = 3,
                 kernel: int = 3, dilation: Sequence[int] = ()) -> None:
        super().__init__()
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(f"the grid predictor needs a square token grid, got {num_tokens} tokens "
                             "(use world_model.pool: 0 or a pool side, not a non-square grid)")
        if min(feature_dim, action_dim, width, depth) < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError("feature_dim, action_dim, width and depth must be >= 1 and kernel odd")
        dilation = tuple(dilation) or (1,) * depth
        if len(dilation) != depth or min(dilation) < 1:
            raise ValueError(f"dilation needs one value >= 1 per layer ({depth}), got {dilation}")
        self.feature_dim, self.action_dim, self.num_tokens, self.side = feature_dim, action_dim, num_tokens, side
        self.inp = nn.Conv2d(feature_dim + action_dim, width, 1)
        self.film = nn.ModuleList(nn.Linear(action_dim, 2 * width) for _ in range(depth))
        self.body = nn.ModuleList(nn.Conv2d(width, width, kernel, padding=d * (kernel // 2), dilation=d)
                                  for d in dilation)
        self.out = nn.Conv2d(width, feature_dim, 1)
        nn.init.zeros_(self.out.weight)  # starts as "nothing changes", the best guess for most tokens
        nn.init.zeros_(self.out.bias)
        self.to(memory_format=torch.channels_last)  # weights in the layout of the grids (see step)

    def step(self, grid: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """One step on the grid layout: [B, D, side, side], [B, A] -> [B, D, side, side], channels-last.

        Channels-last (NHWC in memory) is what makes these narrow convolutions fast on CPU: a 3 x 3
        convolution of width 32 over 200 grids took 4.3 ms instead of 9.5 ms on one thread, 2.0 ms
        instead of 10.9 ms on two (README).
        """
        grid = grid.contiguous(memory_format=torch.channels_last)
        return grid + self.out(self.body_of(F.conv2d(grid, self.inp.weight[:, :self.feature_dim]), action))

    def body_of(self, features_in: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The hidden state after the residual body, from the input convolution of the features (no bias).

        The input convolution over [features, broadcast action] is computed as a convolution of the features
        plus a per-sample bias from the action: the same weights, without materialising the broadcast.
        """
        b = action.shape[0]
        bias = F.linear(action, self.inp.weight[:, self.feature_dim:, 0, 0], self.inp.bias)
        h = (features_in + bias.view(b, -1, 1, 1)).to(bias.dtype)  # the layers' dtype (bf16 under autocast)
        for film, conv in zip(self.film, self.body):
            scale, shift = film(action).view(b, -1, 1, 1).chunk(2, dim=1)
            h = h + F.gelu(conv(torch.addcmul(shift, h, 1 + scale)))
        return h

    def to_grid(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, N, D] -> [B, D, side, side]: a channels-last view of the same memory, no copy."""
        return feats.reshape(feats.shape[0], self.side, self.side, self.feature_dim).permute(0, 3, 1, 2)

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """[B, D, side, side] -> [B, N, D]; no copy for a channels-last grid."""
        return grid.permute(0, 2, 3, 1).reshape(grid.shape[0], self.num_tokens, self.feature_dim)

    def forward(self, feats: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Every frame's successor from the true frame (teacher forcing); frames are independent."""
        check_frames(feats, actions, self.num_tokens, self.feature_dim, self.action_dim)
        b, t = feats.shape[:2]
        nxt = self.step(self.to_grid(feats.flatten(0, 1)), actions.flatten(0, 1))
        return self.from_grid(nxt).view(b, t, self.num_tokens, self.feature_dim)

    def rollout(self, context: torch.Tensor, actions: torch.Tensor, *, last_only: bool = False) -> torch.Tensor:
        """Imagine H steps from the last context frame: context [B, C, N, D], actions [B, C - 1 + H, A]
        (the actions after each context frame, then the H planned ones) -> predicted features [B, H, N, D],
        or only the last of them [B, 1, N, D] with ``last_only`` (see :meth:`last_frame`; no H-frame
        tensor is built). Every frame is H calls of :meth:`step` (the rollout loss needs each one D-wide).
        """
        b, c = context.shape[:2]
        h = actions.shape[1] - (c - 1)
        if h < 1:
            raise ValueError(f"{actions.shape[1]} actions for {c} context frames leave no step to imagine")
        check_frames(context, actions[:, :c], self.num_tokens, self.feature_dim, self.action_dim)
        grid = self.to_grid(context[:, -1])
        if last_only:
            return self.from_grid(self.last_frame(grid, actions[:, c - 1:])).unsqueeze(1)
        out = []
        for k in range(c - 1, c - 1 + h):
            grid = self.step(grid, actions[:, k])
            out.append(self.from_grid(grid))
        return torch.stack(out, 1)

    def last_frame(self, grid: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The frame after H steps, [B, D, side, side], [B, H, A] -> [B, D, side, side], computed in the
        body's width: the same as H calls of :meth:`step`, without their D-wide work.

        The output and the next step's input convolutions are both 1 x 1 with nothing between them, so what
        step k + 1's input convolution sees of the frame is that of step k plus (W_in W_out) x step k's
        hidden state + W_in b_out, and the last frame is the first + W_out x the sum of the hidden states
        + H x b_out. Each step then skips the two D-wide convolutions and the D-wide residual add: 5-8 %
        faster for 200 samples on the recipe's grid (README).

        Under autocast only the body's 3 x 3 convolutions run in the autocast dtype (their weights cast once
        per call, not per step): the frame's state (what the input convolution sees, the sum of hidden
        states, the folded maps), the residual stream inside the body and the action's FiLM stay fp32, where
        whole steps round the frame to bf16 for their input convolution and keep the body's stream in bf16.
        bf16 element-wise work is also slower than fp32 here, so this is both closer to fp32 and faster
        (README).
        """
        h, b = actions.shape[1], actions.shape[0]
        if grid.shape[0] > 1 and grid.stride(0) == 0:  # one start broadcast to every sample (a planner's call):
            grid = grid[:1]  # its input convolution once, not once per sample
        grid = grid.contiguous(memory_format=torch.channels_last)
        device = grid.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.out.weight.dtype
        w_in, w_out = self.inp.weight[:, :self.feature_dim], self.out.weight
        with torch.autocast(device, enabled=False):
            through = (w_in[:, :, 0, 0] @ w_out[:, :, 0, 0])[..., None, None]  # W_in W_out
            through_bias = w_in[:, :, 0, 0] @ self.out.bias
            seen = F.conv2d(grid, w_in)
            action_bias = F.linear(actions, self.inp.weight[:, self.feature_dim:, 0, 0], self.inp.bias)
            films = [film(actions).view(b, h, -1, 1, 1).chunk(2, dim=2) for film in self.film]  # all steps at once
            convs = [(conv.weight.to(dtype), conv.bias.to(dtype), conv.padding, conv.dilation) for conv in self.body]
            total = None
            for k in range(h):
                hidden = seen + action_bias[:, k].view(b, -1, 1, 1)
                for (scale, shift), (weight, bias, padding, dilation) in zip(films, convs):
                    update = _conv_gelu(torch.addcmul(shift[:, k], hidden, 1 + scale[:, k]).to(dtype), weight, bias,
                                        padding, dilation)
                    hidden = _accumulate(hidden, update)
                total = hidden if total is None else _accumulate(total, hidden)
                if k < h - 1:
                    seen = seen + F.conv2d(hidden, through, through_bias)
            return grid + F.conv2d(total, w_out, h * self.out.bias)


def _accumulate(total: torch.Tensor, more: torch.Tensor) -> torch.Tensor:
    """total + more in total's dtype; in place where no gradient needs total's old value (a fresh fp32 sum
    per add cost as much as the add here)."""
    return total + more.to(total.dtype) if torch.is_grad_enabled() else total.add_(more)


def _conv_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: tuple[int, int],
               dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """gelu(conv2d(x)). On CPU without a gradient, one oneDNN convolution with the GELU as its post-op (the op
    torch.compile's CPU backend emits): the GELU is applied to the accumulator before the output is written,
    skipping a pass over it (a bf16 GELU took 0.5 ms of a 1.7 ms convolution + GELU over 200 grids, README)."""
    if (x.device.type == "cpu" and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, bias)))
            and _fused_conv_gelu_works(x.dtype)):
        return _fused_conv_gelu(x, weight, bias, padding, dilation)
    return F.gelu(F.conv2d(x, weight, bias, padding=padding, dilation=dilation))


def _fused_conv_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, padding: tuple[int, int],
                     dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, list(padding), [1, 1], list(dilation), 1, "gelu",
                                                   [], "none")


@functools.cache
def _fused_conv_gelu_works(dtype: torch.dtype) -> bool:
    """Whether this build and CPU run the fused op in ``dtype`` and agree with the unfused one: a private op,
    present only where torch was built with oneDNN, so it is tried once and the plain path kept otherwise."""
    if dtype not in (torch.float32, torch.bfloat16) or not torch.backends.mkldnn.is_available():
        return False
    x, weight, bias = (torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
                       for shape in ((2, 3, 5, 5), (4, 3, 3, 3), (4,)))
    try:
        with torch.no_grad():
            fused = _fused_conv_gelu(x, weight, bias, (1, 1)).float()
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    expected = F.gelu(F.conv2d(x.float(), weight.float(), bias.float(), padding=1))
    return bool(torch.allclose(fused, expected, atol=0.05, rtol=0.02))
