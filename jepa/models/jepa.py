"""The JEPA model: composed from a context encoder, a predictor and a loss."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from jepa.ema import ema_update
from jepa.losses import JEPALoss
from jepa.masks import MaskSet
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

    def forward(self, inputs: torch.Tensor, masks: Sequence[MaskSet]) -> dict[str, torch.Tensor]:
        """Loss terms averaged over the mask sets, plus ``target_pooled`` features for collapse diagnostics.

        The target encoder runs once on all tokens; the context encoder and the
        predictor run once per mask set.
        """
        with torch.no_grad():
            h = self.target_encoder(inputs)
            pooled = h.mean(dim=1)
            h = F.layer_norm(h, h.shape[-1:])
        totals: dict[str, torch.Tensor] = {}
        for i, (context_idx, target_idx) in enumerate(masks):
            b, m, k = target_idx.shape
            targets = gather_tokens(h, target_idx.reshape(b, m * k)).reshape(b, m, k, -1)
            context = self.encoder(inputs, keep=context_idx)
            pred = self.predictor(context, context_idx, target_idx, mask_index=i)
            for key, value in self.loss(pred, targets, context).items():
                totals[key] = totals.get(key, 0.0) + value / len(masks)
        totals["target_pooled"] = pooled.detach()
        return totals

    def update_target(self, momentum: float) -> None:
        ema_update(self.target_encoder, self.encoder, momentum)
