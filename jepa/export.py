"""Exports of a backbone: safetensors weights plus a small JSON config, and timm's VisionTransformer."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

from jepa.backbone import Backbone, EncoderSpec
from jepa.checkpoint import CheckpointError

EXPORT_FORMAT = "jepa-encoder"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_encoder(backbone: Backbone, folder: str | os.PathLike) -> Path:
    """Write ``folder/model.safetensors`` (the encoder's weights, timm key names) and ``folder/config.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in backbone.encoder.state_dict().items()}
    config = {"format": EXPORT_FORMAT, "version": 1, "spec": asdict(backbone.spec)}
    _atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(weights, tmp, metadata={"format": EXPORT_FORMAT}))
    _atomic_write(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err


def read_export(path: str | os.PathLike) -> tuple[EncoderSpec, dict[str, torch.Tensor]] | None:
    """(spec, weights) of an export folder or its ``model.safetensors``; None for a safetensors file without our config."""
    path = Path(path)
    weights_path = path / WEIGHTS_FILE if path.is_dir() else path
    config_path = weights_path.parent / CONFIG_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path} does not exist")
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err})") from err
    if config.get("format") != EXPORT_FORMAT:
        return None
    spec_dict = dict(config.get("spec", {}))
    known = {f.name for f in fields(EncoderSpec)}
    if unknown := sorted(set(spec_dict) - known):
        raise CheckpointError(f"{config_path}: unknown spec keys {unknown}; valid keys are {sorted(known)}")
    for key in ("mean", "std"):
        if key in spec_dict:
            spec_dict[key] = tuple(spec_dict[key])
    try:
        spec = EncoderSpec(**spec_dict)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: {err}") from err
    return spec, read_safetensors(weights_path)


def to_timm(backbone: Backbone) -> TimmVisionTransformer:
    """The same 2-D encoder as timm's ``VisionTransformer`` (no class token, average pooling, no head)."""
    spec = backbone.spec
    if spec.is_video or spec.positions != "table":
        raise ValueError("only 2-D image encoders with a position table have a timm VisionTransformer equivalent")
    model = TimmVisionTransformer(
        img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans, num_classes=0,
        global_pool="avg", embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio, qkv_bias=True, class_token=False, fc_norm=False,
    )
    model.load_state_dict(backbone.encoder.state_dict(), strict=True)
    return model.to(backbone.encoder.pos_embed.device).eval()
