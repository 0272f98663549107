"""Tests for the linear probe: accuracy against references, no test leakage, determinism."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from jepa import probe
from jepa.probe import ProbeResult, fit_linear_heads, standardize, train_linear_probe

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn digits as a fixed stratified 75/25 split (raw 0..16 pixel counts)."""
    x, y = load_digits(return_X_y=True)
    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return (torch.tensor(tr_x, dtype=torch.float32), torch.tensor(tr_y),
            torch.tensor(te_x, dtype=torch.float32), torch.tensor(te_y))


def _load_fashion(split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(FASHION_DIR / f"{split}-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(FASHION_DIR / f"{split}-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    x = torch.from_numpy(images[:limit].copy())
    return x, torch.from_numpy(labels[:limit].astype(np.int64))


def test_matches_sklearn_logistic_regression_on_digits(digits) -> None:
    tr_x, tr_y, te_x, te_y = digits
    std_tr, std_te = standardize(tr_x, te_x)
    reference = LogisticRegression(max_iter=5000).fit(std_tr.numpy(), tr_y.numpy())
    sk_acc = reference.score(std_te.numpy(), te_y.numpy())

    result = train_linear_probe(tr_x, tr_y, te_x, te_y)

    assert sk_acc > 0.9 and result.test_accuracy > 0.9, (sk_acc, result)
    assert abs(result.test_accuracy - sk_acc) <= 0.02, (result.test_accuracy, sk_acc)
    assert result.train_accuracy >= result.test_accuracy - 0.01


@pytest.mark.skipif(not (FASHION_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason=f"Fashion-MNIST IDX files not found under {FASHION_DIR}")
def test_raw_fashion_mnist_pixels_in_known_logistic_regression_range() -> None:
    tr_x, tr_y = _load_fashion("train", 10_000)
    te_x, te_y = _load_fashion("t10k", 5_000)

    result = train_linear_probe(tr_x, tr_y, te_x, te_y)

    assert 0.82 <= result.test_accuracy <= 0.86, result
    assert result.val_accuracy is not None and 0.8 <= result.val_accuracy <= 0.9


def test_selection_ignores_test_split_contents(digits) -> None:
    """Garbage test features and labels must not change anything but the test score."""
    tr_x, tr_y, te_x, te_y = digits
    gen = torch.Generator().manual_seed(123)
    noise_x = torch.randn(te_x.shape, generator=gen) * 50
    noise_y = torch.randint(0, 10, te_y.shape, generator=gen)

    clean = train_linear_probe(tr_x, tr_y, te_x, te_y)
    garbage = train_linear_probe(tr_x, tr_y, noise_x, noise_y)

    assert clean.grid == garbage.grid
    assert (clean.lr, clean.weight_decay) == (garbage.lr, garbage.weight_decay)
    assert clean.val_accuracy == garbage.val_accuracy == max(g["val_accuracy"] for g in clean.grid)
    assert clean.train_accuracy == garbage.train_accuracy
    assert clean.test_accuracy > 0.9 and garbage.test_accuracy < 0.3


def test_test_split_is_read_only_after_the_final_head_is_trained(digits, monkeypatch) -> None:
    """Record every torch op on the test tensors (and anything derived from them)."""
    tr_x, tr_y, te_x, te_y = digits
    events: list[tuple[str, str]] = []

    class Recorded(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            events.append(("test", getattr(func, "__name__", repr(func))))
            return super().__torch_function__(func, types, args, kwargs or {})

    def recording_fit(*args, **kwargs):
        events.append(("fit_start", str(len(kwargs["lrs"]))))
        out = fit_linear_heads(*args, **kwargs)
        events.append(("fit_end", ""))
        return out

    monkeypatch.setattr(probe, "fit_linear_heads", recording_fit)
    result = train_linear_probe(tr_x, tr_y, te_x.as_subclass(Recorded),
                                te_y.as_subclass(Recorded), lrs=(1e-2, 1e-1),
                                weight_decays=(0.0, 1e-3))

    kinds = [kind for kind, _ in events]
    fits = [name for kind, name in events if kind == "fit_start"]
    assert fits == ["4", "1"], "expected one batched grid fit, then one retrain"
    first_fit = kinds.index("fit_start")
    last_fit_end = len(kinds) - 1 - kinds[::-1].index("fit_end")
    during = [events[i] for i in range(first_fit, last_fit_end + 1) if kinds[i] == "test"]
    assert during == [], f"test split touched while fitting/selecting: {during[:5]}"
    assert "test" in kinds[:first_fit] and "test" in kinds[last_fit_end:], "recorder saw no reads"
    assert result.val_accuracy is not None and result.test_accuracy > 0.9


def test_same_seed_is_bit_identical_and_seed_matters(digits) -> None:
    tr_x, tr_y, te_x, te_y = digits
    kwargs = dict(epochs=10, lrs=(3e-3, 3e-2), weight_decays=(0.0, 1e-2))
    first = train_linear_probe(tr_x, tr_y, te_x, te_y, seed=7, **kwargs)
    second = train_linear_probe(tr_x, tr_y, te_x, te_y, seed=7, **kwargs)
    other = train_linear_probe(tr_x, tr_y, te_x, te_y, seed=8, **kwargs)

    assert first == second
    assert first.grid != other.grid

    std_x, = standardize(tr_x)
    heads = dict(num_classes=10, lrs=[3e-2], weight_decays=[1e-3], epochs=3, batch_size=64)
    w1, b1 = fit_linear_heads(std_x, tr_y, seed=1, **heads)
    w2, b2 = fit_linear_heads(std_x, tr_y, seed=1, **heads)
    w3, _ = fit_linear_heads(std_x, tr_y, seed=2, **heads)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
    assert not torch.equal(w1, w3)


def test_batched_heads_match_heads_trained_alone(digits) -> None:
    tr_x, tr_y, _, _ = digits
    std_x, = standardize(tr_x)
    pairs = [(1e-3, 0.0), (3e-2, 1e-3), (1e-1, 1e-2)]
    common = dict(num_classes=10, epochs=5, batch_size=128, seed=3)
    weight, bias = fit_linear_heads(std_x, tr_y, lrs=[p[0] for p in pairs],
                                    weight_decays=[p[1] for p in pairs], **common)
    assert weight.shape == (3, 64, 10) and bias.shape == (3, 10)
    for h, (lr, wd) in enumerate(pairs):
        w_alone, b_alone = fit_linear_heads(std_x, tr_y, lrs=[lr], weight_decays=[wd], **common)
        torch.testing.assert_close(weight[h], w_alone[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bias[h], b_alone[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(weight[0], weight[2], atol=1e-3), "heads should differ"


def test_heads_match_torch_adam_reference(digits) -> None:
    """Independent check of the hand-written gradients, Adam, L2 and cosine schedule."""
    tr_x, tr_y, _, _ = digits
    x, = standardize(tr_x[:640])
    y = tr_y[:640]
    lr, wd, epochs, batch_size, seed = 3e-2, 1e-2, 3, 64, 5  # 640 rows: no batch-size cap
    weight, bias = fit_linear_heads(x, y, num_classes=10, lrs=[lr], weight_decays=[wd],
                                    epochs=epochs, batch_size=batch_size, seed=seed)

    linear = torch.nn.Linear(64, 10)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optim = torch.optim.Adam([{"params": [linear.weight], "weight_decay": wd},
                              {"params": [linear.bias], "weight_decay": 0.0}], lr=lr)
    total = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda t: 0.5 * (1 + math.cos(math.pi * t / total)))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            optim.zero_grad()
            torch.nn.functional.cross_entropy(linear(x[idx]), y[idx]).backward()
            optim.step()
            sched.step()

    torch.testing.assert_close(weight[0], linear.weight.detach().T, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(bias[0], linear.bias.detach(), rtol=1e-3, atol=1e-4)


def test_single_pair_skips_selection(digits) -> None:
    tr_x, tr_y, te_x, te_y = digits
    result = train_linear_probe(tr_x, tr_y, te_x, te_y, lrs=[3e-2], weight_decays=[1e-3],
                                epochs=5)
    assert isinstance(result, ProbeResult)
    assert result.val_accuracy is None and (result.lr, result.weight_decay) == (3e-2, 1e-3)
    assert result.grid == [{"lr": 3e-2, "weight_decay": 1e-3, "val_accuracy": None,
                            "val_loss": None}]
    assert result.epochs == 5 and result.test_accuracy > 0.9


def test_standardize_uses_train_statistics_only() -> None:
    train = torch.tensor([[0, 10, 5], [2, 30, 5], [4, 50, 5]], dtype=torch.uint8)
    other = torch.tensor([[2.0, 30.0, 7.0]])
    std_train, std_other = standardize(train, other)

    assert std_train.dtype == torch.float32
    torch.testing.assert_close(std_train.mean(0), torch.zeros(3))
    torch.testing.assert_close(std_train[:, :2].std(0, correction=0), torch.ones(2))
    torch.testing.assert_close(std_other, torch.tensor([[0.0, 0.0, 2.0]]))  # constant: centred
    assert standardize(train.double())[0].dtype == torch.float64


def _base() -> dict:
    gen = torch.Generator().manual_seed(0)
    return dict(train_x=torch.randn(40, 5, generator=gen), train_y=torch.arange(40) % 3,
                test_x=torch.randn(20, 5, generator=gen), test_y=torch.arange(20) % 3)


def _with(**changes) -> dict:
    return {**_base(), **changes}


@pytest.mark.parametrize(("kwargs", "match"), [
    (_with(train_x=torch.randn(40)), "train_x must be 2-D"),
    (_with(test_x=torch.randn(20, 5, 1)), "test_x must be 2-D"),
    (_with(train_x=torch.randn(0, 5), train_y=torch.zeros(0, dtype=torch.long)), "empty"),
    (_with(test_x=torch.randn(0, 5), test_y=torch.zeros(0, dtype=torch.long)), "empty"),
    (_with(train_y=torch.arange(39) % 3), "40 labels to match"),
    (_with(test_x=torch.randn(20, 4)), "5 features but test_x has 4"),
    (_with(test_y=torch.arange(20) % 4), r"test_y has label 3, out of range for num_classes=3 "
                                         r"\(inferred"),
    (_with(num_classes=2), r"train_y has label 2, out of range for num_classes=2 \(given\)"),
    (_with(train_y=torch.arange(40) % 3 - 1), "negative label -1"),
    (_with(train_y=(torch.arange(40) % 3).float()), "integer class ids"),
    (_with(train_y=torch.zeros(40, dtype=torch.long)), "at least 2 classes"),
    (_with(train_x=torch.randn(40, 5).index_fill(0, torch.tensor([3]), float("nan"))),
     "train_x contains NaN or inf"),
    (_with(test_x=torch.full((20, 5), float("inf"))), "test_x contains NaN or inf"),
    (_with(epochs=0), "epochs must be a positive int"),
    (_with(batch_size=2.5), "batch_size must be a positive int"),
    (_with(lrs=[]), "at least one value"),
    (_with(lrs=[0.1, -1.0]), "every lr must be finite and > 0"),
    (_with(weight_decays=[float("nan")]), "every weight decay must be finite"),
    (_with(val_fraction=1.0), r"val_fraction must be in \(0, 1\)"),
    (_with(val_fraction=0.001), "need at least one row on each side"),
])
def test_bad_inputs_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        train_linear_probe(**kwargs)


def test_explicit_num_classes_allows_classes_missing_from_train() -> None:
    result = train_linear_probe(**_with(test_y=torch.arange(20) % 4, num_classes=4), epochs=2)
    assert 0.0 <= result.test_accuracy <= 1.0


def test_standardize_and_fit_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="others\\[0\\] must be 2-D with 3 features"):
        standardize(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="lrs and weight_decays pair up per head"):
        fit_linear_heads(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), num_classes=2,
                         lrs=[0.1, 0.2], weight_decays=[0.0], epochs=1, batch_size=2, seed=0)
