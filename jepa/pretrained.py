"""Encoders rebuilt from our training checkpoints (the config travels inside the checkpoint)."""

from __future__ import annotations

import os
from typing import Any, Literal

from jepa.build import build_encoder
from jepa.checkpoint import FORMAT, CheckpointError, load_checkpoint, load_matching
from jepa.config import Config, from_dict
from jepa.models.vit import VisionTransformer


def encoder_from_checkpoint(
    path: str | os.PathLike, which: Literal["target", "context"] = "target"
) -> tuple[Config, VisionTransformer]:
    """The run's config and its frozen target (default, what the papers evaluate) or context encoder, in eval mode."""
    return encoder_from_state(load_checkpoint(path), which, str(path))


def encoder_from_state(
    state: dict[str, Any], which: Literal["target", "context"], what: str
) -> tuple[Config, VisionTransformer]:
    """As :func:`encoder_from_checkpoint`, from an already loaded checkpoint dictionary (``what`` names it in errors)."""
    if which not in ("target", "context"):
        raise ValueError(f"which must be 'target' or 'context', got {which!r}")
    if state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{what} is not a jepa training checkpoint (no 'format': '{FORMAT}' and 'config')")
    cfg = from_dict(state["config"])
    encoder = build_encoder(cfg)
    key = "target_encoder" if which == "target" else "encoder"
    load_matching(encoder, state[key], f"{what} [{key}]")
    return cfg, encoder.eval().requires_grad_(False)
