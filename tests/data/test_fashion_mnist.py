import pytest
import torch

from jepa.data import fashion_mnist
from jepa.data.fashion_mnist import DataNotFoundError, find_fashion_mnist, load_fashion_mnist


def test_missing_data_fails_at_once_saying_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "_debian_dirs", lambda: [])
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.delenv("JEPA_FASHION_MNIST", raising=False)
    with pytest.raises(DataNotFoundError) as err:
        find_fashion_mnist(tmp_path / "empty", download=False)
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "apt-get install dataset-fashion-mnist" in message


def test_loads_the_debian_package():
    try:
        find_fashion_mnist(download=False)
    except DataNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and set(labels.tolist()) == set(range(10))
    assert abs(images.float().mean().item() / 255 - fashion_mnist.MEAN[0]) < 0.01
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")
