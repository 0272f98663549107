"""``load_encoder``: one call from a checkpoint file to a frozen backbone, explicit about what it loaded.

Sources: our training checkpoints (the config travels inside), our exports
(safetensors + config.json), official I-JEPA / V-JEPA / V-JEPA 2 checkpoints
and bare timm-style ViT state dicts. For official and bare weights the
architecture is read off the tensors: depth from the block count, width and
channels from the patch kernel, patch/tubelet size from its shape, MLP ratio
from ``fc1``, heads from the standard width table, RoPE from the absence of a
``pos_embed``. What the tensors cannot tell (16- vs 22-head giant, the frame
count behind a 3-D position table) comes from ``arch`` / ``num_frames`` /
``img_size``, or is an error naming the choices.

Rotary vs table positions: a V-JEPA 2 encoder has no parameter that a V-JEPA
one lacks (RoPE adds none), and both trainers save the same top-level keys, so a
V-JEPA 2 file that still carried an unused ``pos_embed`` would be tensor for
tensor a V-JEPA file. ``rope=True`` / ``rope=False`` settles it; when a 3-D table
is taken as V-JEPA by inference, the report says so and names ``rope=True``. The
one counter-signal a file can hold is its predictor: the V-JEPA predictor always
stores a ``predictor_pos_embed``, the V-JEPA 2 (RoPE) one never does, so a table
encoder next to a table-less predictor is refused until ``rope`` is given.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch

from jepa.backbone import Backbone, EncoderSpec, LoadReport, build_encoder_from_spec
from jepa.build import IMAGENET_MEAN, IMAGENET_STD, is_video
from jepa.checkpoint import FORMAT, CheckpointError, load_checkpoint
from jepa.config import Config
from jepa.data import fashion_mnist
from jepa.data.video_data import VIDEO_MEAN, VIDEO_STD
from jepa.export import WEIGHTS_FILE, read_export, read_safetensors
from jepa.models.vit import VIT_SIZES, VisionTransformer, resolve_size
from jepa.pretrained import encoder_from_state

ENTRIES = {"target": "target_encoder", "context": "encoder"}
PREFIXES = ("module.", "backbone.")
VJEPA2_DEFAULTS = {"img_size": 256, "num_frames": 64}  # V-JEPA 2 pretraining input (RoPE runs at any size)


def load_encoder(
    source: str | os.PathLike,
    which: Literal["target", "context"] = "target",
    arch: str | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    rope: bool | None = None,
    strict: bool = True,
    verbose: bool = True,
) -> Backbone:
    """A frozen :class:`~jepa.backbone.Backbone` (eval mode, no gradients) from ``source``.

    ``which``: the target (EMA) encoder, which the papers evaluate, or the context encoder.
    ``arch``: a name from ``VIT_SIZES`` for weights whose head count the width cannot tell.
    ``img_size`` / ``num_frames``: the input the backbone should expect; they also pick
    the frame count behind a 3-D position table. A position table is resized once here.
    ``rope``: None infers the positions (no ``pos_embed``: rotary, V-JEPA 2); True forces
    V-JEPA 2 rotary positions (a ``pos_embed`` in the file is unused and reported as
    ignored); False forces an absolute position table.
    ``strict=False`` allows a partial load (missing keys stay at random init), reported.
    ``dtype`` defaults to float32.
    """
    if which not in ENTRIES:
        raise ValueError(f"which must be 'target' or 'context', got {which!r}")
    if arch is not None and arch not in VIT_SIZES:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(VIT_SIZES)}")
    for name, value in (("img_size", img_size), ("num_frames", num_frames)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if rope not in (None, True, False):
        raise ValueError(f"rope must be True, False or None (infer), got {rope!r}")
    path = Path(source)
    if path.is_dir() or path.suffix == ".safetensors":
        backbone = _from_safetensors(path, arch, img_size, num_frames, rope, strict)
    else:
        state = load_checkpoint(path, mmap=True)
        if state.get("format") == FORMAT:
            backbone = _from_training_checkpoint(path, state, which, arch, img_size, num_frames, rope)
        else:
            weights, entry = _encoder_entry(path, state, which)
            backbone = _from_weights(weights, str(path), entry, arch, img_size, num_frames, rope, strict,
                                     _predictor_positions(state))
    if verbose:
        print(backbone.report, file=sys.stderr)
    return backbone.to(device=device, dtype=dtype or torch.float32).eval().requires_grad_(False)


def _check_rope(path: Path, spec: EncoderSpec, rope: bool | None) -> None:
    """A file that describes itself (config inside) may be told its positions only if that agrees."""
    if rope is not None and rope != (spec.positions == "rope"):
        raise ValueError(f"{path} describes its own encoder, which uses {spec.positions} positions: "
                         f"rope={rope} contradicts it; drop rope=")


def _from_training_checkpoint(path: Path, state: dict[str, Any], which: str, arch: str | None,
                              img_size: int | None, num_frames: int | None, rope: bool | None) -> Backbone:
    if arch is not None:
        raise ValueError(f"{path} is a jepa training checkpoint: its architecture comes from its config, drop arch=")
    entry = ENTRIES[which]
    cfg, encoder = encoder_from_state(state, which, str(path))
    spec = spec_from_config(cfg)
    _check_rope(path, spec, rope)
    if num_frames is not None and not spec.is_video:
        raise ValueError(f"num_frames is for video encoders; {path} holds an image encoder")
    target = replace(spec, img_size=img_size or spec.img_size, num_frames=num_frames or spec.num_frames)
    notes = _regrid(encoder, spec, target)
    return Backbone(encoder, target, LoadReport(str(path), "jepa training checkpoint", entry, notes=notes))


def _from_safetensors(path: Path, arch: str | None, img_size: int | None, num_frames: int | None,
                      rope: bool | None, strict: bool) -> Backbone:
    exported = read_export(path)
    if exported is None:  # a bare safetensors state dict (e.g. a timm model's)
        weights_path = path / WEIGHTS_FILE if path.is_dir() else path
        return _from_weights(read_safetensors(weights_path), str(weights_path), None, arch, img_size, num_frames,
                             rope, strict)
    if arch is not None:
        raise ValueError(f"{path} is a jepa export: its architecture comes from its config.json, drop arch=")
    spec, weights = exported
    _check_rope(path, spec, rope)
    if num_frames is not None and not spec.is_video:
        raise ValueError(f"num_frames is for video encoders; {path} holds an image encoder")
    encoder, missing, unexpected = _load(spec, weights, strict, str(path))
    target = replace(spec, img_size=img_size or spec.img_size, num_frames=num_frames or spec.num_frames)
    notes = _regrid(encoder, spec, target)
    return Backbone(encoder, target, LoadReport(str(path), "jepa export", "state dict", "", missing, unexpected,
                                                notes))


def _encoder_entry(path: Path, state: dict[str, Any], which: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """The encoder weights of an official checkpoint (``target_encoder`` / ``encoder``) or a bare state dict."""
    if any(key in state for key in ENTRIES.values()):
        entry = ENTRIES[which]
        if entry not in state:
            raise CheckpointError(f"{path} has no {entry!r} for which={which!r}; it holds {sorted(state)}")
        return state[entry], entry
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state, None
    raise CheckpointError(
        f"{path} holds neither encoder weights ('target_encoder' / 'encoder') nor a state dict of tensors; "
        f"its keys are {sorted(state)[:10]}"
    )


def _predictor_positions(state: dict[str, Any]) -> str | None:
    """How the file's predictor encodes positions: "table" (V-JEPA, I-JEPA), "rope" (V-JEPA 2), None (no predictor)."""
    predictor = state.get("predictor")
    if not isinstance(predictor, dict) or not any("predictor_blocks." in key for key in predictor):
        return None
    return "table" if any(key.endswith("predictor_pos_embed") for key in predictor) else "rope"


def strip_prefix(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Remove the ``module.`` (DDP) and ``backbone.`` (V-JEPA wrapper) prefixes every key carries."""
    prefix = ""
    for part in PREFIXES:
        if weights and all(key.startswith(prefix + part) for key in weights):
            prefix += part
    return {key[len(prefix):]: value for key, value in weights.items()}, prefix


def _from_weights(raw: dict[str, torch.Tensor], source: str, entry: str | None, arch: str | None,
                  img_size: int | None, num_frames: int | None, rope: bool | None, strict: bool,
                  predictor_positions: str | None = None) -> Backbone:
    weights, prefix = strip_prefix(raw)
    native, target = infer_spec(weights, arch=arch, img_size=img_size, num_frames=num_frames, rope=rope)
    inferred_table = rope is None and native.is_video and native.positions == "table"
    if inferred_table and predictor_positions == "rope":
        raise CheckpointError(
            f"{source}: the encoder has a 3-D position table (V-JEPA) but the predictor saved with it has no "
            "'predictor_pos_embed' (a rotary predictor, as V-JEPA 2 trains): pass rope=True for a V-JEPA 2 "
            "encoder (its pos_embed is then ignored) or rope=False for a V-JEPA one"
        )
    fmt = _format_name(native, entry)
    ignored: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if native.positions == "rope" and "pos_embed" in weights:  # only with rope=True: RoPE has no use for a table
        weights = {k: v for k, v in weights.items() if k != "pos_embed"}
        ignored = ("pos_embed",)
    elif "pos_embed" in weights:
        weights = {**weights, "pos_embed": weights["pos_embed"].reshape(1, -1, native.embed_dim)}
    if inferred_table:
        notes = ("positions: an absolute 3-D table, inferred from the file's pos_embed; a V-JEPA 2 file that "
                 "still carries an unused pos_embed looks exactly the same, so if this is V-JEPA 2 load it with "
                 "rope=True (jepa export / probe programs: --rope)",)
    encoder, missing, unexpected = _load(native, weights, strict, source)
    notes += _regrid(encoder, native, target)
    report = LoadReport(source, fmt, entry or "state dict", prefix, missing, unexpected, notes, ignored)
    return Backbone(encoder, target, report)


def _format_name(spec: EncoderSpec, entry: str | None) -> str:
    if entry is None:
        return "timm-style state dict"
    if spec.positions == "rope":
        return "V-JEPA 2"
    return "V-JEPA" if spec.is_video else "I-JEPA"


def infer_spec(weights: dict[str, torch.Tensor], *, arch: str | None = None, img_size: int | None = None,
               num_frames: int | None = None, rope: bool | None = None) -> tuple[EncoderSpec, EncoderSpec]:
    """(native, requested) specs of prefix-free ViT weights: the one the tensors were trained at and the one asked for.

    ``rope`` None: rotary positions exactly when there is no ``pos_embed``; True / False: as told.
    """
    kernel = weights.get("patch_embed.proj.weight")
    if kernel is None or kernel.ndim not in (4, 5):
        raise CheckpointError("no 2-D/3-D 'patch_embed.proj.weight' among the weights: not a ViT encoder "
                              f"(first keys: {sorted(weights)[:5]})")
    embed_dim, in_chans, patch_size = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
    tubelet_size = kernel.shape[2] if kernel.ndim == 5 else None
    blocks = {int(key.split(".")[1]) for key in weights if key.startswith("blocks.")}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"blocks must be numbered 0..depth-1, found {sorted(blocks)}")
    fc1 = weights.get("blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError("no 'blocks.0.mlp.fc1.weight': not a timm-style ViT block")
    base = dict(
        embed_dim=embed_dim, depth=len(blocks), num_heads=_num_heads(embed_dim, arch),
        mlp_ratio=fc1.shape[0] / embed_dim, patch_size=patch_size, in_chans=in_chans,
        mean=_default_norm(IMAGENET_MEAN, in_chans), std=_default_norm(IMAGENET_STD, in_chans),
    )
    has_table = "pos_embed" in weights
    if rope is False and not has_table:
        raise CheckpointError("rope=False, but the weights have no 'pos_embed' to take absolute positions from")
    if tubelet_size is None:
        if rope:
            raise ValueError("rope=True: rotary positions (V-JEPA 2) are for video encoders with a 3-D (tubelet) "
                             "patch embedding; these weights have a 2-D one")
        if num_frames is not None:
            raise ValueError("num_frames is for video encoders; these weights have a 2-D patch embedding")
        if not has_table:
            raise CheckpointError("a 2-D patch embedding without 'pos_embed': unknown position scheme")
        native = EncoderSpec(**base, img_size=_square_side(weights["pos_embed"].shape[-2]) * patch_size)
        return native, replace(native, img_size=img_size or native.img_size)
    if rope or (rope is None and not has_table):  # V-JEPA 2: rotary positions in attention
        requested = EncoderSpec(**base, tubelet_size=tubelet_size, positions="rope",
                                img_size=img_size or VJEPA2_DEFAULTS["img_size"],
                                num_frames=num_frames or VJEPA2_DEFAULTS["num_frames"])
        return requested, requested
    frames, side = _video_grid(weights["pos_embed"].shape[-2], patch_size, tubelet_size, img_size, num_frames)
    native = EncoderSpec(**base, tubelet_size=tubelet_size, img_size=side * patch_size, num_frames=frames)
    return native, replace(native, img_size=img_size or native.img_size, num_frames=num_frames or frames)


def _default_norm(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    return values if in_chans == len(values) else (sum(values) / len(values),) * in_chans


def _num_heads(embed_dim: int, arch: str | None) -> int:
    if arch is not None:
        size = VIT_SIZES[arch]
        if size.embed_dim != embed_dim:
            raise ValueError(f"arch {arch!r} is {size.embed_dim} wide but the weights are {embed_dim} wide")
        return size.num_heads
    choices = {name: size.num_heads for name, size in VIT_SIZES.items() if size.embed_dim == embed_dim}
    if not choices:
        widths = sorted({size.embed_dim for size in VIT_SIZES.values()})
        raise CheckpointError(f"width {embed_dim} is not a standard ViT width {widths}: the head count is unknown")
    if len(set(choices.values())) > 1:
        named = ", ".join(f"{name!r} ({heads} heads)" for name, heads in choices.items())
        raise CheckpointError(f"width {embed_dim} fits several head counts: pass arch= one of {named}")
    return next(iter(choices.values()))


def _square_side(num_tokens: int) -> int:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise CheckpointError(f"pos_embed has {num_tokens} rows, not a square grid (a class token?)")
    return side


def _video_grid(num_tokens: int, patch: int, tubelet: int, img_size: int | None,
                num_frames: int | None) -> tuple[int, int]:
    """(frames, grid side) behind a 3-D position table of ``num_tokens`` rows."""
    options = [(t * tubelet, s) for s in range(1, math.isqrt(num_tokens) + 1)
               if num_tokens % (s * s) == 0 for t in [num_tokens // (s * s)]]
    for wanted in ((num_frames, None), (None, img_size)):
        frames, size = wanted
        picked = [(f, s) for f, s in options
                  if (frames is not None and f == frames) or (size is not None and s * patch == size)]
        if len(picked) == 1:
            return picked[0]
    listed = ", ".join(f"num_frames={f} with img_size={s * patch}" for f, s in options if f >= tubelet and s > 1)
    raise CheckpointError(
        f"a 3-D position table of {num_tokens} tokens fits several clip shapes ({listed}); "
        "pass num_frames= or img_size= to say which the weights were trained at"
    )


def _load(spec: EncoderSpec, weights: dict[str, torch.Tensor], strict: bool,
          source: str) -> tuple[torch.nn.Module, tuple[str, ...], tuple[str, ...]]:
    """The encoder for ``spec`` with ``weights``; refuses missing/unexpected keys unless not ``strict``."""
    with torch.device("meta"):
        probe = build_encoder_from_spec(spec)
    own = probe.state_dict()
    missing = tuple(sorted(set(own) - set(weights)))
    unexpected = tuple(sorted(set(weights) - set(own)))
    shapes = [f"{k}: weights {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(weights)) if weights[k].shape != own[k].shape]
    if shapes:
        raise CheckpointError(f"{source}: shapes do not fit the inferred architecture: {shapes[:5]}")
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"{source}: partial load refused (missing keys {list(missing)[:8]}, unexpected keys "
            f"{list(unexpected)[:8]}); pass strict=False to load the matching keys anyway"
        )
    if missing:  # only when not strict: the missing tensors need a real initialisation
        encoder = build_encoder_from_spec(spec)
        encoder.load_state_dict({k: weights[k] for k in own if k in weights}, strict=False)
    else:
        encoder = probe
        encoder.load_state_dict({k: weights[k] for k in own}, assign=True)
    return encoder, missing, unexpected


def _regrid(encoder: torch.nn.Module, native: EncoderSpec, target: EncoderSpec) -> tuple[str, ...]:
    """Resize a position table from the native to the requested input once; say so."""
    if target.grid == native.grid or not isinstance(encoder, VisionTransformer):
        return ()
    for size, unit in ((target.img_size, target.patch_size), (target.num_frames, target.tubelet_size)):
        if size is not None and size % unit:
            raise ValueError(f"requested size {size} is not a multiple of the patch/tubelet size {unit}")
    encoder.regrid(target.grid)
    return (f"position table resized from grid {native.grid} to {target.grid}",)


def spec_from_config(cfg: Config) -> EncoderSpec:
    """The spec of a training run's encoder, with the normalisation its data pipeline used."""
    e = cfg.encoder
    size = resolve_size(e.arch, embed_dim=e.embed_dim, depth=e.depth, num_heads=e.num_heads, mlp_ratio=e.mlp_ratio)
    video = is_video(cfg)
    if video:
        mean, std = VIDEO_MEAN, VIDEO_STD
    elif cfg.data.source == "fashion-mnist":
        mean, std = fashion_mnist.MEAN, fashion_mnist.STD
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return EncoderSpec(
        embed_dim=size.embed_dim, depth=size.depth, num_heads=size.num_heads, mlp_ratio=size.mlp_ratio,
        patch_size=e.patch_size, in_chans=e.in_chans, img_size=cfg.data.img_size,
        num_frames=cfg.video.num_frames if video else None, tubelet_size=cfg.video.tubelet_size if video else None,
        mean=_default_norm(mean, e.in_chans), std=_default_norm(std, e.in_chans),
    )
