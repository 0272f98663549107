"""Weighted k-nearest-neighbour classification on frozen features (the DINO / InstDisc kNN protocol).

Features are L2-normalised, so similarity is cosine; each of the k nearest train rows votes for its
label with weight exp(similarity / temperature). Unlike a linear probe there is nothing to fit, so the
score says how well the feature geometry alone separates the classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_labels(name: str, y: Tensor, rows: int) -> None:
    if y.ndim != 1 or len(y) != rows:
        raise ValueError(f"{name} must be 1-D with {rows} labels (one per row), got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if rows and int(y.min()) < 0:
        raise ValueError(f"{name} has negative labels (min {int(y.min())}); unlabelled data cannot be scored by kNN")


def knn_classify(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk: int = 1024,
) -> dict[str, Tensor]:
    """Class votes for every test row: ``{"scores": float32 [M, C], "predictions": int64 [M]}``.

    Ties in the vote go to the lower class index. Test rows are processed ``chunk`` at a time so the
    similarity matrix never exceeds [chunk, N] (60k train x 10k test fits in a few hundred MB).
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x must be 2-D [rows, features] with the same features, "
            f"got {tuple(train_x.shape)} and {tuple(test_x.shape)}"
        )
    if len(train_x) == 0:
        raise ValueError("train_x is empty: kNN needs at least one train row")
    _check_labels("train_y", train_y, len(train_x))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(train_x):
        raise ValueError(f"k must be an int in [1, {len(train_x)}] (the train size), got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    seen = int(train_y.max()) + 1
    if num_classes is None:
        num_classes = seen
    elif num_classes < seen:
        raise ValueError(f"num_classes={num_classes} but train_y has label {seen - 1}")

    train = F.normalize(train_x.float(), dim=1)
    labels = train_y.to(train.device, torch.long)
    scores = []
    for start in range(0, len(test_x), chunk):
        test = F.normalize(test_x[start : start + chunk].to(train.device, torch.float32), dim=1)
        sims, idx = (test @ train.T).topk(k, dim=1)
        votes = torch.zeros(len(test), num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], (sims / temperature).exp())
        scores.append(votes)
    scores = torch.cat(scores) if scores else torch.zeros(0, num_classes, device=train.device)
    return {"scores": scores, "predictions": scores.argmax(dim=1)}  # argmax: first maximum, i.e. the lower class


def knn_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 20, temperature: float = 0.07,
    chunk: int = 1024,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy of :func:`knn_classify`.

    A test row is a top-5 hit when its class ranks among the 5 highest votes (ties to the lower index)
    and got at least one vote, so with few voting classes unvoted classes never count as free hits.
    """
    _check_labels("test_y", test_y, len(test_x))
    if len(test_x) == 0:
        raise ValueError("test_x is empty: accuracy needs at least one test row")
    num_classes = max(int(train_y.max()) if len(train_y) else 0, int(test_y.max())) + 1
    out = knn_classify(train_x, train_y, test_x, k=k, temperature=temperature, num_classes=num_classes, chunk=chunk)
    scores = out["scores"]
    truth = test_y.to(scores.device, torch.long)
    true_score = scores.gather(1, truth[:, None])
    classes = torch.arange(num_classes, device=scores.device)
    rank = (scores > true_score).sum(1) + ((scores == true_score) & (classes < truth[:, None])).sum(1)
    top5 = (rank < 5) & (true_score[:, 0] > 0)
    return {"top1": (out["predictions"] == truth).float().mean().item(), "top5": top5.float().mean().item()}
