"""Attentive probe on frozen encoder tokens, selected and scored like the linear probe.

The V-JEPA papers score frozen encoders with an attentive probe because mean
pooling hides what individual tokens carry. The contract is the one of
:func:`jepa.probe.train_linear_probe`: (lr, weight decay) is chosen on a seeded
validation split carved from the training rows, the winner is retrained on all
of them, and the test split is read once, to score it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa.models.probes import AttentiveClassifier
from jepa.probe import _check_positive_int, best_index, resolve_classes, selection_grid, validation_split

__all__ = ["AttentiveProbeResult", "all_tokens", "fit_attentive_classifier", "train_attentive_probe"]

DEFAULT_LRS: tuple[float, ...] = (1e-3, 3e-4)
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-2, 1e-4)
_EVAL_CHUNK = 1024
_MIN_STEPS_PER_EPOCH = 10  # small sets get smaller batches, as in jepa.probe


@dataclass(frozen=True)
class AttentiveProbeResult:
    """Outcome of one attentive probe: the chosen probe's scores and the grid it won."""

    test_accuracy: float
    train_accuracy: float
    val_accuracy: float | None  # None if no selection happened
    lr: float
    weight_decay: float
    epochs: int
    grid: list[dict]  # every (lr, wd) tried with its val accuracy and loss


def all_tokens(encoder: nn.Module) -> Callable[[Tensor], Tensor]:
    """Every final token [B, N, D], unpooled: the attentive probe chooses how to pool."""
    return lambda x: encoder(x)


def fit_attentive_classifier(
    tokens: Tensor, y: Tensor, *, num_classes: int, num_heads: int, depth: int, lr: float,
    weight_decay: float, epochs: int, batch_size: int, seed: int,
) -> AttentiveClassifier:
    """Train a seeded AttentiveClassifier with AdamW and per-step cosine lr; returns it in eval mode.

    Init and batch order come from ``seed`` alone (the global RNG is forked), so
    the same inputs give the same probe. Tokens may be stored in float16 to save
    memory; each batch is trained in float32 on the tokens' device.
    """
    n, dim = len(tokens), tokens.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttentiveClassifier(dim, num_classes, num_heads=num_heads, depth=depth).to(tokens.device)
    batch_size = min(batch_size, max(1, n // _MIN_STEPS_PER_EPOCH))
    total = epochs * math.ceil(n / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total)))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=generator).to(tokens.device).split(batch_size):
            loss = F.cross_entropy(model(tokens[idx].float()), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def _scores(model: nn.Module, tokens: Tensor, y: Tensor) -> tuple[float, float]:
    """Accuracy and mean cross-entropy, in chunks to bound memory."""
    correct, loss = 0, 0.0
    for tc, yc in zip(tokens.split(_EVAL_CHUNK), y.split(_EVAL_CHUNK)):
        logits = model(tc.float())
        correct += int((logits.argmax(dim=-1) == yc).sum())
        loss += float(F.cross_entropy(logits, yc, reduction="sum"))
    return correct / len(y), loss / len(y)


def _check_tokens(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 3-D [N, T, D] tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def train_attentive_probe(
    train_tokens: Tensor,
    train_y: Tensor,
    test_tokens: Tensor,
    test_y: Tensor,
    *,
    num_heads: int,
    num_classes: int | None = None,
    depth: int = 0,
    epochs: int = 20,
    batch_size: int = 256,
    lrs: Sequence[float] = DEFAULT_LRS,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> AttentiveProbeResult:
    """Score frozen tokens [N, T, D] by the test accuracy of a tuned attentive classifier.

    With more than one (lr, wd) pair a seeded ``val_fraction`` of the training
    rows is held out, every pair is trained on the rest, the best val accuracy
    wins (ties go to the lower val loss), and the winner is retrained on all
    training rows. The test split is read only for input checks and, once, to
    score the final probe. ``num_classes`` defaults to ``train_y.max() + 1``.
    """
    _check_tokens("train_tokens", train_tokens)
    _check_tokens("test_tokens", test_tokens)
    if train_tokens.shape[-1] != test_tokens.shape[-1]:
        raise ValueError(f"train_tokens have dim {train_tokens.shape[-1]} but test_tokens have "
                         f"{test_tokens.shape[-1]}")
    if len({train_tokens.device, train_y.device, test_tokens.device, test_y.device}) != 1:
        raise ValueError("train_tokens, train_y, test_tokens and test_y must be on the same device")
    classes = resolve_classes(train_y, test_y, len(train_tokens), len(test_tokens), num_classes)
    for name, value in (("num_heads", num_heads), ("epochs", epochs), ("batch_size", batch_size)):
        _check_positive_int(name, value)
    if train_tokens.shape[-1] % num_heads:
        raise ValueError(f"token dim {train_tokens.shape[-1]} must be divisible by num_heads={num_heads}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(f"depth must be an int >= 0, got {depth!r}")
    pairs = selection_grid(lrs, weight_decays, seed=seed, val_fraction=val_fraction)
    fit = dict(num_classes=classes, num_heads=num_heads, depth=depth, epochs=epochs,
               batch_size=batch_size, seed=seed)
    train_y = train_y.long()

    if len(pairs) == 1:
        (lr, wd), val_accuracy = pairs[0], None
        grid: list[dict] = [{"lr": lr, "weight_decay": wd, "val_accuracy": None, "val_loss": None}]
    else:
        val_idx, fit_idx = validation_split(len(train_tokens), val_fraction=val_fraction, seed=seed,
                                            device=train_tokens.device)
        grid = []
        for lr, wd in pairs:
            model = fit_attentive_classifier(train_tokens[fit_idx], train_y[fit_idx], lr=lr, weight_decay=wd, **fit)
            acc, loss = _scores(model, train_tokens[val_idx], train_y[val_idx])
            grid.append({"lr": lr, "weight_decay": wd, "val_accuracy": acc, "val_loss": loss})
        best = best_index(grid)
        (lr, wd), val_accuracy = pairs[best], grid[best]["val_accuracy"]

    model = fit_attentive_classifier(train_tokens, train_y, lr=lr, weight_decay=wd, **fit)
    train_accuracy = _scores(model, train_tokens, train_y)[0]
    test_accuracy = _scores(model, test_tokens, test_y.long())[0]
    return AttentiveProbeResult(test_accuracy=test_accuracy, train_accuracy=train_accuracy,
                                val_accuracy=val_accuracy, lr=lr, weight_decay=wd, epochs=epochs, grid=grid)
