"""Tests for the attentive probe: it sees what mean pooling hides, and selection never reads test data."""

import pytest
import torch

from jepa.attentive import all_tokens, train_attentive_probe
from jepa.probe import train_linear_probe

CLASSES = 4


def marker_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens [n, 8, 16]: every class direction appears on exactly two tokens, so the mean is the same
    for every class; the label is the direction of the one token that carries a spike on feature 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(CLASSES, (n,), generator=g)
    cls = torch.arange(CLASSES).repeat(2).expand(n, -1)
    rows, cols = torch.arange(n)[:, None], torch.arange(2 * CLASSES)[None]
    x = 0.1 * torch.randn(n, 2 * CLASSES, 16, generator=g)
    x[rows, cols, 1 + cls] += 1.0
    x[torch.arange(n), (cls == y[:, None]).float().argmax(dim=1), 0] += 3.0
    order = torch.argsort(torch.rand(n, 2 * CLASSES, generator=g), dim=1)
    return x[rows, order], y


FAST = dict(num_heads=2, epochs=8, lrs=(1e-2, 1e-3), weight_decays=(1e-4,))


def test_attentive_probe_finds_the_marked_token_that_mean_pooling_loses() -> None:
    train_x, train_y = marker_task(1000, 0)
    test_x, test_y = marker_task(500, 1)
    attentive = train_attentive_probe(train_x, train_y, test_x, test_y, **{**FAST, "epochs": 30})
    linear = train_linear_probe(train_x.mean(dim=1), train_y, test_x.mean(dim=1), test_y)
    assert attentive.test_accuracy > 0.9 and linear.test_accuracy < 0.4
    assert attentive.lr == 1e-2 and len(attentive.grid) == 2


def test_selection_ignores_test_split_contents() -> None:
    train_x, train_y = marker_task(400, 0)
    test_x, test_y = marker_task(200, 1)
    g = torch.Generator().manual_seed(5)
    garbage_x, garbage_y = torch.randn(test_x.shape, generator=g), torch.randint(CLASSES, (200,), generator=g)
    clean = train_attentive_probe(train_x, train_y, test_x, test_y, **FAST)
    garbage = train_attentive_probe(train_x, train_y, garbage_x, garbage_y, **FAST)
    assert clean.grid == garbage.grid
    assert (clean.lr, clean.weight_decay) == (garbage.lr, garbage.weight_decay)
    assert clean.val_accuracy == garbage.val_accuracy == max(g["val_accuracy"] for g in clean.grid)
    assert clean.train_accuracy == garbage.train_accuracy


def test_same_seed_is_identical_and_float16_tokens_train() -> None:
    train_x, train_y = marker_task(300, 0)
    test_x, test_y = marker_task(100, 1)
    kwargs = {**FAST, "lrs": (1e-2,), "epochs": 3}
    first = train_attentive_probe(train_x, train_y, test_x, test_y, **kwargs)
    assert first == train_attentive_probe(train_x, train_y, test_x, test_y, **kwargs)
    assert first.val_accuracy is None and first.grid[0]["val_accuracy"] is None
    half = train_attentive_probe(train_x.half(), train_y, test_x.half(), test_y, depth=1, **kwargs)
    assert 0.0 <= half.test_accuracy <= 1.0


def test_all_tokens_keeps_every_token() -> None:
    encoder = torch.nn.Linear(4, 6)
    assert all_tokens(encoder)(torch.randn(2, 5, 4)).shape == (2, 5, 6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"train_tokens": torch.randn(10, 4)}, "train_tokens must be a non-empty 3-D"),
    ({"test_tokens": torch.randn(5, 3, 6)}, "train_tokens have dim 8 but test_tokens have 6"),
    ({"num_heads": 3}, "divisible by num_heads=3"),
    ({"depth": -1}, "depth must be an int >= 0"),
    ({"val_fraction": 1.0}, "val_fraction must be in"),
    ({"lrs": ()}, "at least one value"),
    ({"test_y": torch.full((5,), 7)}, "test_y has label 7"),
    ({"epochs": 0}, "epochs must be a positive int"),
])
def test_bad_inputs_raise_clear_errors(kwargs: dict, match: str) -> None:
    args = {"train_tokens": torch.randn(10, 3, 8), "train_y": torch.arange(10) % 2,
            "test_tokens": torch.randn(5, 3, 8), "test_y": torch.arange(5) % 2, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        train_attentive_probe(args.pop("train_tokens"), args.pop("train_y"), args.pop("test_tokens"),
                              args.pop("test_y"), **args)
