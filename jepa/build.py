"""Objects built from a :class:`~jepa.config.Config`: the model, its optimizer and the data pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from jepa.config import Config, ConfigError
from jepa.data import fashion_mnist
from jepa.data.image_folder import ImageFolder, split_folder
from jepa.data.pretrain import LabelledTensors
from jepa.losses import JEPALoss, local_batch
from jepa.data.video_data import is_video_source
from jepa.masks import (BlockSpec, MaskGenerator, MultiBlock3DMasks, MultiBlockMasks, RandomTubeMasks,
                        token_multiple_for)
from jepa.models.jepa import JEPA
from jepa.models.pos_embed import sincos_2d, sincos_3d
from jepa.models.predictor import Predictor, SharedContextPredictor
from jepa.models.vit import VisionTransformer, resolve_size, vit_2d, vit_3d
from jepa.perf import StaticShapes

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_video(cfg: Config) -> bool:
    return is_video_source(cfg.data.source)


def grid_size(cfg: Config) -> tuple[int, ...]:
    """The token grid: (H, W) for images, (T, H, W) for video."""
    side = cfg.data.img_size // cfg.encoder.patch_size
    if is_video(cfg):
        return cfg.video.num_frames // cfg.video.tubelet_size, side, side
    return side, side


def build_encoder(cfg: Config) -> VisionTransformer:
    e = cfg.encoder
    size = resolve_size(e.arch, embed_dim=e.embed_dim, depth=e.depth, num_heads=e.num_heads, mlp_ratio=e.mlp_ratio)
    if is_video(cfg):
        return vit_3d(size, img_size=cfg.data.img_size, num_frames=cfg.video.num_frames, patch_size=e.patch_size,
                      tubelet_size=cfg.video.tubelet_size, in_chans=e.in_chans)
    return vit_2d(size, img_size=cfg.data.img_size, patch_size=e.patch_size, in_chans=e.in_chans)


def build_jepa(cfg: Config, *, gather: Callable[[torch.Tensor], torch.Tensor] = local_batch) -> JEPA:
    """The model of ``cfg``; ``gather`` collects the batch its VICReg statistics are taken over (default: local)."""
    encoder = build_encoder(cfg)
    p = cfg.predictor
    grid = grid_size(cfg)
    predictor_class = SharedContextPredictor if p.shared_context else Predictor
    predictor = predictor_class(
        encoder_dim=encoder.embed_dim,
        pos_embed=sincos_3d(p.embed_dim, grid) if len(grid) == 3 else sincos_2d(p.embed_dim, grid),
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads,
        num_mask_tokens=num_mask_sets(cfg),
    )
    loss = JEPALoss(kind=cfg.loss.kind, var_coeff=cfg.loss.var_coeff, cov_coeff=cfg.loss.cov_coeff,
                    gather=gather)
    return JEPA(encoder=encoder, predictor=predictor, loss=loss)


def num_mask_sets(cfg: Config) -> int:
    """Mask sets per batch, hence predictor mask tokens: 2 for V-JEPA multi-block, else 1."""
    return 2 if is_video(cfg) and cfg.video.masks == "multiblock" else 1


def build_masks(cfg: Config) -> MaskGenerator:
    m, v, grid = cfg.masks, cfg.video, grid_size(cfg)
    if is_video(cfg) and v.masks == "tube":
        if m.context_tokens is not None:
            raise ConfigError("masks.context_tokens does nothing with video.masks=tube: tube masks keep the same "
                              "counts in every batch already")
        return RandomTubeMasks(grid=grid, ratio=v.tube_ratio)
    multiple = token_multiple_for(m.token_multiple, grid)
    if is_video(cfg):
        if m.context_tokens not in (None, "auto"):
            raise ConfigError(f"masks.context_tokens={m.context_tokens}: on clips it takes only 'auto' or null, "
                              "because V-JEPA's two mask sets each need their own context and target counts")
        specs = tuple(
            BlockSpec(int(blocks), (scale, scale), aspect=m.target_aspect) for blocks, scale in (v.short_range, v.long_range)
        )
        return MultiBlock3DMasks(grid=grid, specs=specs, min_keep=m.min_keep, token_multiple=multiple,
                                 fixed_counts=m.context_tokens)
    return MultiBlockMasks(
        grid=grid,
        num_targets=m.num_targets,
        target_scale=m.target_scale,
        target_aspect=m.target_aspect,
        context_scale=m.context_scale,
        context_aspect=m.context_aspect,
        min_keep=m.min_keep,
        token_multiple=multiple,
        context_tokens=m.context_tokens,
    )


def static_shapes(cfg: Config) -> StaticShapes:
    """Which of the step's token counts ``cfg``'s masks keep fixed: tube masks and clips with
    ``masks.context_tokens`` fix context and targets, images with it the context only."""
    if is_video(cfg):
        fixed = cfg.video.masks == "tube" or cfg.masks.context_tokens is not None
        return StaticShapes(context=fixed, targets=fixed)
    return StaticShapes(context=cfg.masks.context_tokens is not None)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.AdamW:
    """AdamW with two groups: weight decay on matrices and kernels, none on biases and 1-D parameters.

    ``perf.fused_optimizer`` picks the fused kernel (one pass over all parameters) over foreach.
    """
    decay, no_decay = [], []
    for _, param in sorted(model.named_parameters()):
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay[0], "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]
    fused = cfg.perf.fused_optimizer
    return torch.optim.AdamW(groups, lr=cfg.optim.start_lr, betas=cfg.optim.betas, fused=fused, foreach=not fused)


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset with its normalisation."""

    dataset: torch.utils.data.Dataset
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int


def build_image_data(cfg: Config, split: str) -> ImageData:
    """The configured image source for 'train' or 'test', checked against the encoder's input channels."""
    if cfg.data.source == "fashion-mnist":
        images, labels = fashion_mnist.load_fashion_mnist(split, cfg.data.root)
        data = ImageData(LabelledTensors(images, labels), fashion_mnist.MEAN, fashion_mnist.STD, 1)
    elif cfg.data.source == "trajectories":
        from jepa.planning.trajectories import trajectory_frames

        if cfg.data.root is None:
            raise ConfigError("data.source 'trajectories' needs data.root, the folder of trajectory shards")
        images, labels, mean, std = trajectory_frames(cfg.data.root)
        data = ImageData(LabelledTensors(images, labels), mean, std, images.shape[1])
    else:
        data = ImageData(ImageFolder(split_folder(cfg.data.source, split)), IMAGENET_MEAN, IMAGENET_STD, 3)
    if data.channels != cfg.encoder.in_chans:
        raise ConfigError(
            f"data.source {cfg.data.source!r} has {data.channels} channel(s) but encoder.in_chans is "
            f"{cfg.encoder.in_chans}; set encoder.in_chans={data.channels}"
        )
    return data
