"""Losses as small pure functions, plus the module that combines them for training.

The prediction term compares predictor outputs with layer-normed target
features; the VICReg variance and covariance terms keep the context features
spread out so the encoder cannot collapse to a constant. Collapse diagnostics
(per-dimension std, effective rank) are tensors, so logging them costs no host
sync until the values are printed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LossKind = Literal["smooth_l1", "l1", "l2"]


def prediction_loss(pred: torch.Tensor, target: torch.Tensor, kind: LossKind = "smooth_l1") -> torch.Tensor:
    """Mean element-wise distance between predictions and (already normalised) targets."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "l2":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown prediction loss {kind!r}; choose smooth_l1, l1 or l2")


def variance_loss(z: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """VICReg variance hinge: mean_j relu(1 - sqrt(Var_j(z) + eps)) over samples z [N, D]."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(1.0 - std).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """VICReg covariance: sum of squared off-diagonal covariances / D, over samples z [N, D]."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    off_diagonal = cov - torch.diag_embed(torch.diagonal(cov))
    return off_diagonal.pow(2).sum() / d


def feature_std(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the per-dimension std of z [N, D] (near 0 means collapse)."""
    return z.float().std(dim=0).mean()


def effective_rank(z: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """RankMe: exp(entropy of the normalised singular values) of z [N, D]; about k for rank k.

    The features are centred first: a shared offset is not information, and
    without centring it alone would make collapsed features look rank 1+.
    """
    z = z.float()
    s = torch.linalg.svdvals(z - z.mean(dim=0))
    p = s / (s.sum() + eps) + eps
    return torch.exp(-(p * p.log()).sum())


def local_batch(z: torch.Tensor) -> torch.Tensor:
    """The batch statistics' samples in one process: this batch as it is."""
    return z


class JEPALoss(nn.Module):
    """Prediction loss on layer-normed targets plus weighted VICReg terms on pooled context features.

    ``gather`` collects the pooled features the batch statistics are taken over: the identity in one
    process, :func:`jepa.distributed.gather_batch` to take them over all ranks' samples.
    """

    def __init__(
        self, *, kind: LossKind = "smooth_l1", var_coeff: float = 0.0, cov_coeff: float = 0.0,
        gather: Callable[[torch.Tensor], torch.Tensor] = local_batch,
    ) -> None:
        super().__init__()
        if kind not in ("smooth_l1", "l1", "l2"):
            raise ValueError(f"unknown prediction loss {kind!r}; choose smooth_l1, l1 or l2")
        if var_coeff < 0 or cov_coeff < 0:
            raise ValueError("var_coeff and cov_coeff must be >= 0")
        self.kind: LossKind = kind
        self.var_coeff = var_coeff
        self.cov_coeff = cov_coeff
        self.gather = gather

    def forward(self, pred: torch.Tensor, target: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """pred/target [..., D]; context [B, Nc, D] context-encoder tokens."""
        terms = {"pred_loss": prediction_loss(pred.float(), target.float(), self.kind)}
        loss = terms["pred_loss"]
        if self.var_coeff or self.cov_coeff:
            pooled = self.gather(context.float().mean(dim=1))
            terms["var_loss"] = variance_loss(pooled)
            terms["cov_loss"] = covariance_loss(pooled)
            loss = loss + self.var_coeff * terms["var_loss"] + self.cov_coeff * terms["cov_loss"]
        terms["loss"] = loss
        return terms
