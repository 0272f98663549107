"""Linear probe on frozen features: the yardstick used to score encoders.

The same probe scores a pretrained encoder's pooled features, a random-init
encoder's features and raw pixels, so every input is standardised with
train-split statistics and trained with the same optimiser and grid. The probe
is multinomial logistic regression (an L2-penalised softmax on a single weight
matrix) trained with Adam, cosine lr decay and seeded minibatches, so a result
is reproducible bit-for-bit on the same device. A whole (lr, weight decay)
grid trains in one pass as a batched weight tensor, so selection costs about
one run. Hyper-parameters are chosen on a validation split carved from the
training data; the test split is only read once, to score the chosen head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ProbeResult", "fit_linear_heads", "standardize", "train_linear_probe"]

DEFAULT_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2)

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_EVAL_CHUNK = 8192
_MIN_STEPS_PER_EPOCH = 10
_STD_EPS = 1e-6


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe: the chosen head's scores and the grid it won."""

    test_accuracy: float
    train_accuracy: float
    val_accuracy: float | None  # None if no selection happened
    lr: float
    weight_decay: float
    epochs: int
    grid: list[dict]  # every (lr, wd) tried with its val accuracy and loss


def _standardizer(train_x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-feature float64 mean and scale of ``train_x``, accumulated in row chunks.

    Chunks keep the float64 copy small for large feature banks. Features whose
    std is below ``eps`` (e.g. always-black border pixels) get scale 1 and are
    only centred: dividing by ~0 would turn tiny test deviations into huge values.
    """
    total = sum(chunk.sum(dim=0, dtype=torch.float64) for chunk in train_x.split(_EVAL_CHUNK))
    mean = total / len(train_x)
    sq_dev = sum(((chunk.to(torch.float64) - mean) ** 2).sum(dim=0)
                 for chunk in train_x.split(_EVAL_CHUNK))
    std = (sq_dev / len(train_x)).sqrt()
    return mean, torch.where(std > eps, std, torch.ones_like(std))


def _apply_standardizer(x: Tensor, mean: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    return (x.to(dtype) - mean.to(dtype)) / scale.to(dtype)


def standardize(train_x: Tensor, *others: Tensor, eps: float = _STD_EPS) -> tuple[Tensor, ...]:
    """Centre and scale every tensor with ``train_x``'s per-feature mean and std.

    Only train statistics are used so nothing leaks from the other splits, and
    near-constant train features are only centred (see :func:`_standardizer`).
    Integer inputs (raw uint8 pixels) come back as float32, float inputs keep
    their dtype; statistics are accumulated in float64.
    """
    if train_x.ndim != 2:
        raise ValueError(f"train_x must be 2-D [N, D], got shape {tuple(train_x.shape)}")
    if train_x.shape[0] == 0:
        raise ValueError("train_x is empty: need at least one row to compute statistics")
    for i, x in enumerate(others):
        if x.ndim != 2 or x.shape[1] != train_x.shape[1]:
            raise ValueError(
                f"others[{i}] must be 2-D with {train_x.shape[1]} features like train_x, "
                f"got shape {tuple(x.shape)}"
            )
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    dtype = train_x.dtype if train_x.is_floating_point() else torch.float32
    mean, scale = _standardizer(train_x, eps)
    return tuple(_apply_standardizer(x, mean, scale, dtype) for x in (train_x, *others))


def _cosine_factors(total_steps: int, device: torch.device) -> Tensor:
    """Per-step multipliers of the base lr, decaying from 1 towards 0."""
    steps = torch.arange(total_steps, dtype=torch.float32, device=device)
    return 0.5 * (1.0 + torch.cos(math.pi * steps / total_steps))


def _adam_update(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, *, step_size: Tensor,
                 step: int) -> None:
    """One in-place Adam step; ``step_size`` broadcasts so each head has its own lr."""
    beta1, beta2 = _ADAM_BETAS
    m.lerp_(grad, 1.0 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    denom = (v / (1.0 - beta2**step)).sqrt_().add_(_ADAM_EPS)
    param.sub_(step_size / (1.0 - beta1**step) * m / denom)


def fit_linear_heads(
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    lrs: Sequence[float],
    weight_decays: Sequence[float],
    epochs: int,
    batch_size: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Train one softmax head per (lrs[h], weight_decays[h]) pair in a single pass.

    Heads share every minibatch, so the weights live in one ``[D, H * C]``
    matrix and each step is one GEMM forward and one backward however many
    heads there are. Gradients are analytic (no autograd graph) and Adam runs
    with per-head lr and L2 penalty; the penalty is part of the objective
    (mean cross-entropy + wd / 2 * ||W||^2, i.e. sklearn's ``C = 1 / (wd * n)``)
    rather than decoupled, so a given wd means the same thing at every lr.
    Heads start at zero (the problem is convex) and batches come from a
    ``torch.Generator(seed)``, so the only randomness is seeded.
    ``batch_size`` is an upper bound: small sets use smaller batches so every
    epoch takes at least 10 steps, else a 1,500-row set would get a tenth of
    the updates a 20,000-row set gets and be scored under-trained.

    ``x`` must already be float and standardised, ``y`` int64 in range; this
    is the inner loop of :func:`train_linear_probe`, which validates inputs.
    Returns weights ``[H, D, C]`` and biases ``[H, C]``.
    """
    if x.ndim != 2 or not x.is_floating_point() or len(x) == 0:
        raise ValueError(f"x must be a non-empty 2-D float tensor, got {x.dtype} {tuple(x.shape)}")
    if y.shape != (len(x),) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if len(lrs) != len(weight_decays):
        raise ValueError(f"lrs and weight_decays pair up per head, got {len(lrs)} and "
                         f"{len(weight_decays)} values")
    _check_grid(lrs, weight_decays)
    for name, value in (("num_classes", num_classes), ("epochs", epochs),
                        ("batch_size", batch_size)):
        _check_positive_int(name, value)
    n, dim = x.shape
    heads, device, dtype = len(lrs), x.device, x.dtype
    lr = torch.tensor(lrs, dtype=dtype, device=device).view(1, heads, 1)
    wd = torch.tensor(weight_decays, dtype=dtype, device=device).view(1, heads, 1)
    weight = torch.zeros(dim, heads, num_classes, dtype=dtype, device=device)
    bias = torch.zeros(1, heads, num_classes, dtype=dtype, device=device)
    state = [(weight, torch.zeros_like(weight), torch.zeros_like(weight)),
             (bias, torch.zeros_like(bias), torch.zeros_like(bias))]
    batch_size = min(batch_size, max(1, n // _MIN_STEPS_PER_EPOCH))
    steps_per_epoch = math.ceil(n / batch_size)
    lr_factors = _cosine_factors(epochs * steps_per_epoch, device).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for idx in order.split(batch_size):
            xb, yb = x[idx], y[idx]
            logits = (xb @ weight.view(dim, -1)).view(-1, heads, num_classes) + bias
            dlogits = torch.softmax(logits, dim=-1)
            dlogits -= torch.nn.functional.one_hot(yb, num_classes).to(dtype).unsqueeze(1)
            dlogits /= len(idx)
            grad_w = (xb.T @ dlogits.view(len(idx), -1)).view(dim, heads, num_classes)
            grad_w += wd * weight
            grad_b = dlogits.sum(dim=0, keepdim=True)
            step_size = lr * lr_factors[step]
            step += 1
            for (param, m, v), grad in zip(state, (grad_w, grad_b)):
                _adam_update(param, grad, m, v, step_size=step_size, step=step)
    return weight.permute(1, 0, 2).contiguous(), bias.view(heads, num_classes)


def _head_scores(x: Tensor, y: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """Accuracy and mean cross-entropy of every head, in row chunks to bound memory."""
    heads, dim, num_classes = weight.shape
    flat = weight.permute(1, 0, 2).reshape(dim, heads * num_classes)
    correct = torch.zeros(heads, dtype=torch.float64, device=x.device)
    loss = torch.zeros(heads, dtype=torch.float64, device=x.device)
    for xc, yc in zip(x.split(_EVAL_CHUNK), y.split(_EVAL_CHUNK)):
        logits = (xc @ flat).view(-1, heads, num_classes) + bias
        target = yc.view(-1, 1).expand(-1, heads)
        correct += (logits.argmax(dim=-1) == target).sum(dim=0)
        nll = -torch.log_softmax(logits, dim=-1).gather(2, target.unsqueeze(-1)).squeeze(-1)
        loss += nll.sum(dim=0, dtype=torch.float64)
    return correct / len(y), loss / len(y)


def _check_features(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, D], got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_labels(name: str, y: Tensor, n: int) -> int:
    """Validate a label vector and return its largest class id."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} labels to match the features, "
                         f"got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {y.dtype}")
    low, high = y.aminmax()
    if int(low) < 0:
        raise ValueError(f"{name} has negative label {int(low)}")
    return int(high)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_grid(lrs: Sequence[float], weight_decays: Sequence[float]) -> None:
    if len(lrs) == 0 or len(weight_decays) == 0:
        raise ValueError("lrs and weight_decays must each hold at least one value")
    if not all(math.isfinite(lr) and lr > 0 for lr in lrs):
        raise ValueError(f"every lr must be finite and > 0, got {list(lrs)}")
    if not all(math.isfinite(wd) and wd >= 0 for wd in weight_decays):
        raise ValueError(f"every weight decay must be finite and >= 0, got {list(weight_decays)}")



def resolve_classes(train_y: Tensor, test_y: Tensor, n_train: int, n_test: int, num_classes: int | None) -> int:
    """The class count (given, or inferred from train_y), with every label checked against it."""
    train_max = _check_labels("train_y", train_y, n_train)
    test_max = _check_labels("test_y", test_y, n_test)
    if num_classes is None:
        classes, origin = train_max + 1, "inferred from train_y"
    else:
        _check_positive_int("num_classes", num_classes)
        classes, origin = num_classes, "given"
    if classes < 2:
        raise ValueError(f"need at least 2 classes, got num_classes={classes} ({origin})")
    for name, high in (("train_y", train_max), ("test_y", test_max)):
        if high >= classes:
            raise ValueError(f"{name} has label {high}, out of range for num_classes={classes} "
                             f"({origin})")
    return classes



def selection_grid(
    lrs: Sequence[float], weight_decays: Sequence[float], *, seed: int, val_fraction: float
) -> list[tuple[float, float]]:
    """The checked (lr, wd) pairs of ``lrs x weight_decays``, with the selection settings validated."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    _check_grid(lrs, weight_decays)
    return [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]


def best_index(grid: list[dict]) -> int:
    """The selection rule every probe shares: best val accuracy, ties to the lower val loss, then the earlier pair."""
    return max(range(len(grid)), key=lambda h: (grid[h]["val_accuracy"], -grid[h]["val_loss"], -h))

def validation_split(n: int, *, val_fraction: float, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Seeded (val_idx, fit_idx) over n training rows: selection happens inside the training data."""
    n_val = round(val_fraction * n)
    if not 1 <= n_val < n:
        raise ValueError(f"val_fraction={val_fraction} of {n} training rows leaves "
                         f"{n_val} for validation; need at least one row on each side")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_val].to(device), perm[n_val:].to(device)


def train_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 30,
    batch_size: int = 1024,
    lrs: Sequence[float] = DEFAULT_LRS,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> ProbeResult:
    """Score frozen features by the test accuracy of a tuned linear softmax head.

    With more than one (lr, wd) pair in ``lrs x weight_decays`` a seeded
    ``val_fraction`` of the training rows is held out, every pair is trained
    on the rest in one batched pass, the best val accuracy wins (ties go to
    the lower val loss), and the winner is retrained on all training rows.
    The test split is read only for input checks and, once, to score the
    final head. Features are standardised with the statistics of whichever
    rows the head is trained on. ``num_classes`` defaults to
    ``train_y.max() + 1``; a test label outside it is an error, not a miss.
    Runs on the features' device.
    """
    _check_features("train_x", train_x)
    _check_features("test_x", test_x)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_x has {train_x.shape[1]} features but test_x has "
                         f"{test_x.shape[1]}")
    if len({train_x.device, train_y.device, test_x.device, test_y.device}) != 1:
        raise ValueError("train_x, train_y, test_x and test_y must be on the same device")
    classes = resolve_classes(train_y, test_y, len(train_x), len(test_x), num_classes)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    pairs = selection_grid(lrs, weight_decays, seed=seed, val_fraction=val_fraction)
    fit_kwargs = dict(num_classes=classes, epochs=epochs, batch_size=batch_size, seed=seed)
    train_y = train_y.long()

    if len(pairs) == 1:
        (lr, wd), val_accuracy = pairs[0], None
        grid: list[dict] = [{"lr": lr, "weight_decay": wd, "val_accuracy": None, "val_loss": None}]
    else:
        val_idx, fit_idx = validation_split(len(train_x), val_fraction=val_fraction, seed=seed, device=train_x.device)
        mean, scale = _standardizer(train_x[fit_idx], _STD_EPS)
        fit_x, val_x = (_apply_standardizer(train_x[idx], mean, scale, torch.float32)
                        for idx in (fit_idx, val_idx))
        weight, bias = fit_linear_heads(fit_x, train_y[fit_idx], lrs=[p[0] for p in pairs],
                                        weight_decays=[p[1] for p in pairs], **fit_kwargs)
        accs, losses = (t.tolist() for t in _head_scores(val_x, train_y[val_idx], weight, bias))
        grid = [{"lr": lr, "weight_decay": wd, "val_accuracy": acc, "val_loss": loss}
                for (lr, wd), acc, loss in zip(pairs, accs, losses)]
        best = best_index(grid)
        (lr, wd), val_accuracy = pairs[best], accs[best]

    mean, scale = _standardizer(train_x, _STD_EPS)
    full_x = _apply_standardizer(train_x, mean, scale, torch.float32)
    weight, bias = fit_linear_heads(full_x, train_y, lrs=[lr], weight_decays=[wd], **fit_kwargs)
    train_accuracy = _head_scores(full_x, train_y, weight, bias)[0].item()
    std_test_x = _apply_standardizer(test_x, mean, scale, torch.float32)
    test_accuracy = _head_scores(std_test_x, test_y.long(), weight, bias)[0].item()
    return ProbeResult(test_accuracy=test_accuracy, train_accuracy=train_accuracy,
                       val_accuracy=val_accuracy, lr=lr, weight_decay=wd, epochs=epochs, grid=grid)
