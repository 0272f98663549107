"""A pretrained encoder as a plain backbone: tokens or pooled features, with what its inputs should look like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from jepa.models.rope import RopeVisionTransformer, vit_rope
from jepa.models.vit import VisionTransformer, VitSize, vit_2d, vit_3d

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to rebuild an encoder and feed it: the JSON config of an export.

    ``num_frames`` is None for image encoders. ``positions`` is ``"table"`` (a fixed
    2-D/3-D table, resized for other input sizes) or ``"rope"`` (rotary, any size).
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int
    in_chans: int
    img_size: int
    num_frames: int | None = None
    tubelet_size: int | None = None
    positions: Literal["table", "rope"] = "table"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.positions not in ("table", "rope"):
            raise ValueError(f"positions must be 'table' or 'rope', got {self.positions!r}")
        if (self.num_frames is None) != (self.tubelet_size is None):
            raise ValueError("num_frames and tubelet_size are given together (video) or not at all (images)")
        if self.positions == "rope" and self.num_frames is None:
            raise ValueError("rotary positions are implemented for video (tubelet) encoders only")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values, got {self.mean} / {self.std}")

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    @property
    def grid(self) -> tuple[int, ...]:
        side = self.img_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side) if self.is_video else (side, side)


def build_encoder_from_spec(spec: EncoderSpec) -> VisionTransformer | RopeVisionTransformer:
    """The (randomly initialised) encoder the spec describes; weights are loaded by the caller."""
    size = VitSize(spec.embed_dim, spec.depth, spec.num_heads, spec.mlp_ratio)
    if spec.positions == "rope":
        return vit_rope(size, patch_size=spec.patch_size, tubelet_size=spec.tubelet_size, in_chans=spec.in_chans)
    if spec.is_video:
        return vit_3d(size, img_size=spec.img_size, num_frames=spec.num_frames, patch_size=spec.patch_size,
                      tubelet_size=spec.tubelet_size, in_chans=spec.in_chans)
    return vit_2d(size, img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans)


@dataclass(frozen=True)
class LoadReport:
    """Where the weights came from and what loading them did."""

    source: str
    format: str  # "jepa training checkpoint", "jepa export", "I-JEPA", "V-JEPA", "V-JEPA 2", "timm-style state dict"
    weights: str  # the checkpoint entry loaded ("target_encoder", "encoder") or "state dict"
    prefix: str = ""  # the key prefix that was stripped
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # keys in the file the chosen architecture has no use for (asked for, e.g. rope=True)

    def __str__(self) -> str:
        parts = [f"loaded {self.weights} of {self.source} ({self.format})"]
        if self.prefix:
            parts.append(f"stripped key prefix {self.prefix!r}")
        if self.missing:
            parts.append(f"MISSING keys left at random init: {list(self.missing)}")
        if self.unexpected:
            parts.append(f"UNEXPECTED keys ignored: {list(self.unexpected)}")
        if self.ignored:
            parts.append(f"ignored keys unused by the chosen architecture: {list(self.ignored)}")
        return "; ".join(parts + list(self.notes))


class Backbone(nn.Module):
    """A frozen-ready encoder: ``forward_features(x) -> [B, N, D]`` tokens, ``forward(x, pool)``.

    Attributes say what input it expects: ``img_size``, ``num_frames`` (None for
    image encoders), ``patch_size``, ``tubelet_size`` and the normalisation
    ``mean``/``std``. Other sizes work too (position tables are resized, RoPE
    needs nothing). Video encoders take images [B, C, H, W] by repeating them
    over time: to the clip length for a position table (as V-JEPA evaluates
    images), to one tubelet for RoPE (as V-JEPA 2 encodes single frames).
    """

    def __init__(self, encoder: VisionTransformer | RopeVisionTransformer, spec: EncoderSpec,
                 report: LoadReport) -> None:
        super().__init__()
        self.encoder = encoder
        self.spec = spec
        self.report = report
        self.embed_dim = spec.embed_dim
        self.img_size = spec.img_size
        self.num_frames = spec.num_frames
        self.patch_size = spec.patch_size
        self.tubelet_size = spec.tubelet_size
        self.mean = spec.mean
        self.std = spec.std

    @property
    def image_frames(self) -> int | None:
        """Frames an image is repeated to in a video encoder."""
        if not self.spec.is_video:
            return None
        return self.spec.tubelet_size if self.spec.positions == "rope" else self.spec.num_frames

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] or clips [B, C, T, H, W] -> final normed tokens [B, N, D]."""
        x = x.to(self.encoder.patch_embed.proj.weight.dtype)
        if self.spec.is_video and x.ndim == 4:
            x = x.unsqueeze(2).repeat(1, 1, self.image_frames, 1, 1)
        return self.encoder(x)

    def forward(self, x: torch.Tensor, pool: Literal["avg", "none"] = "avg") -> torch.Tensor:
        """Average-pooled features [B, D] (the papers' probe input) or, with ``pool="none"``, tokens."""
        if pool not in ("avg", "none"):
            raise ValueError(f"pool must be 'avg' or 'none', got {pool!r}")
        tokens = self.forward_features(x)
        return tokens.mean(dim=1) if pool == "avg" else tokens
