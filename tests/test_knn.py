import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from jepa.knn import knn_accuracy, knn_classify


def reference_votes(train_x, train_y, test_x, k, temperature, num_classes):
    """Brute-force float64 numpy version of the weighted cosine vote, one test row at a time."""
    train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    votes = np.zeros((len(test_x), num_classes))
    for i, row in enumerate(test_x):
        sims = train @ (row / np.linalg.norm(row))
        for j in np.argsort(-sims, kind="stable")[:k]:
            votes[i, train_y[j]] += np.exp(sims[j] / temperature)
    return votes


def reference_accuracy(votes, test_y):
    order = np.argsort(-votes, axis=1, kind="stable")  # ties to the lower class
    top1 = np.mean(order[:, 0] == test_y)
    top5 = np.mean([y in o[:5] and v[y] > 0 for o, v, y in zip(order, votes, test_y)])
    return top1, top5


def data(seed, n_train=300, n_test=80, dim=16, classes=7):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    train_y, test_y = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    train_x = centres[train_y] + 1.5 * rng.normal(size=(n_train, dim))
    test_x = centres[test_y] + 1.5 * rng.normal(size=(n_test, dim))
    return train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y


@pytest.mark.parametrize("k,temperature,chunk", [(1, 0.07, 1024), (5, 0.07, 7), (20, 0.5, 16), (300, 0.1, 33)])
def test_matches_a_brute_force_numpy_reference(k, temperature, chunk):
    train_x, train_y, test_x, test_y = data(seed=k)
    out = knn_classify(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                       k=k, temperature=temperature, chunk=chunk)
    votes = reference_votes(train_x.astype(np.float64), train_y, test_x.astype(np.float64), k, temperature, 7)
    assert torch.equal(out["predictions"], torch.from_numpy(votes.argmax(1)))
    np.testing.assert_allclose(out["scores"].numpy(), votes, rtol=1e-4)
    acc = knn_accuracy(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x),
                       torch.from_numpy(test_y), k=k, temperature=temperature, chunk=chunk)
    top1, top5 = reference_accuracy(votes, test_y)
    assert acc["top1"] == pytest.approx(top1) and acc["top5"] == pytest.approx(top5)
    assert acc["top5"] >= acc["top1"]


def test_k1_is_the_nearest_neighbour_by_cosine():
    train_x, train_y, test_x, _ = data(seed=3)
    nearest = NearestNeighbors(n_neighbors=1, metric="cosine").fit(train_x).kneighbors(test_x, return_distance=False)
    out = knn_classify(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x), k=1)
    assert torch.equal(out["predictions"], torch.from_numpy(train_y[nearest[:, 0]]))


def test_scale_of_features_does_not_matter_only_direction():
    train_x, train_y, test_x, _ = data(seed=4)
    a = knn_classify(torch.from_numpy(train_x), torch.from_numpy(train_y), torch.from_numpy(test_x))
    scale = torch.rand(len(train_x), 1) * 10 + 0.1
    b = knn_classify(torch.from_numpy(train_x) * scale, torch.from_numpy(train_y), torch.from_numpy(test_x) * 3)
    assert torch.equal(a["predictions"], b["predictions"])


def test_top5_counts_only_classes_that_got_votes():
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    acc = knn_accuracy(train_x, torch.tensor([0, 1]), torch.tensor([[1.0, 0.1]]), torch.tensor([1]), k=1)
    assert acc == {"top1": 0.0, "top5": 0.0}
    acc = knn_accuracy(train_x, torch.tensor([0, 1]), torch.tensor([[1.0, 0.1]]), torch.tensor([1]), k=2)
    assert acc == {"top1": 0.0, "top5": 1.0}


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "k must be"), ({"k": 11}, "k must be"), ({"k": 2.0}, "k must be"),
    ({"temperature": 0.0}, "temperature"), ({"temperature": -1.0}, "temperature"), ({"chunk": 0}, "chunk"),
    ({"num_classes": 2}, "num_classes"),
])
def test_bad_options_raise(kwargs, message):
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    with pytest.raises(ValueError, match=message):
        knn_classify(x, y, torch.randn(5, 4), **{"k": 1, **kwargs})


@pytest.mark.parametrize("train_x,train_y,test_x,message", [
    (torch.randn(10, 4), torch.arange(10), torch.randn(5, 3), "same features"),
    (torch.randn(10), torch.arange(10), torch.randn(5, 4), "2-D"),
    (torch.randn(0, 4), torch.arange(0), torch.randn(5, 4), "empty"),
    (torch.randn(10, 4), torch.arange(9), torch.randn(5, 4), "one per row"),
    (torch.randn(10, 4), torch.arange(10.0), torch.randn(5, 4), "integer"),
    (torch.randn(10, 4), torch.arange(10) - 1, torch.randn(5, 4), "negative"),
])
def test_bad_inputs_raise(train_x, train_y, test_x, message):
    with pytest.raises(ValueError, match=message):
        knn_classify(train_x, train_y, test_x, k=1)


def test_unlabelled_test_rows_raise():
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    with pytest.raises(ValueError, match="negative"):
        knn_accuracy(x, y, torch.randn(2, 4), torch.tensor([0, -1]), k=1)
    with pytest.raises(ValueError, match="one per row"):
        knn_accuracy(x, y, torch.randn(2, 4), torch.tensor([0]), k=1)
