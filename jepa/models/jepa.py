"""The JEPA model: composed from a context encoder, a predictor and a loss."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from jepa.ema import ema_update
from jepa.losses import JEPALoss
from jepa.models.vit import gather_tokens


class JEPA(nn.Module):
    """Context encoder + frozen EMA target encoder + predictor, scored by an injected loss.

    The target encoder starts as a copy of the context encoder and is only ever
    changed by :meth:`update_target`.
    """

    def __init__(self, *, encoder: nn.Module, predictor: nn.Module, loss: JEPALoss) -> None:
        super().__init__()
        self.encoder = encoder
        self.predictor = predictor
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.loss = loss

    @torch.no_grad()
    def targets(self, inputs: torch.Tensor, target_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-normed target features at target_idx [B, M, K] -> [B, M, K, D], and pooled raw features [B, D]."""
        h = self.target_encoder(inputs)
        pooled = h.mean(dim=1)
        h = F.layer_norm(h, h.shape[-1:])
        b, m, k = target_idx.shape
        return gather_tokens(h, target_idx.reshape(b, m * k)).reshape(b, m, k, -1), pooled

    def forward(
        self, inputs: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Loss terms for one batch, plus ``target_pooled`` features for collapse diagnostics."""
        targets, pooled = self.targets(inputs, target_idx)
        context = self.encoder(inputs, keep=context_idx)
        pred = self.predictor(context, context_idx, target_idx)
        terms = self.loss(pred, targets, context)
        terms["target_pooled"] = pooled.detach()
        return terms

    def update_target(self, momentum: float) -> None:
        ema_update(self.target_encoder, self.encoder, momentum)
