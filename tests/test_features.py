import hashlib

import pytest
import torch

from jepa.evaluation import extract
from jepa.features import cache_hit, cached_features, checkpoint_fingerprint, feature_fingerprint

CPU = torch.device("cpu")


class Counting:
    """A feature function that records how many batches it encoded."""

    def __init__(self) -> None:
        self.calls = 0
        self.weight = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.flatten(1) @ self.weight


def dataset(n=23):
    g = torch.Generator().manual_seed(1)
    return torch.utils.data.TensorDataset(torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 4, (n,), generator=g))


def fingerprint(ckpt, **changes):
    return feature_fingerprint(**{
        "checkpoint": ckpt, "weights": "target", "pooling": "mean", "source": "fashion-mnist", "split": "train",
        "subset_size": 600, "img_size": 28, "seed": 0, **changes,
    })


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "a.pt"
    path.write_bytes(b"weights-a" * 1000)
    return path


def test_cached_features_equal_uncached_and_second_call_does_not_encode(tmp_path, ckpt):
    fn, data = Counting(), dataset()
    reference = extract(fn, data, batch_size=8, device=CPU)
    fn.calls = 0
    kwargs = dict(cache_dir=tmp_path / "cache", fingerprint=fingerprint(ckpt), batch_size=8, device=CPU)
    assert not cache_hit("train", cache_dir=tmp_path / "cache", fingerprint=fingerprint(ckpt))
    first = cached_features("train", fn, data, **kwargs)
    assert fn.calls == 3 and cache_hit("train", cache_dir=tmp_path / "cache", fingerprint=fingerprint(ckpt))
    second = cached_features("train", fn, data, **kwargs)
    assert fn.calls == 3
    for x, y in (first, second):
        assert torch.equal(x, reference[0]) and torch.equal(y, reference[1])
        assert x.dtype == torch.float32 and y.dtype == torch.int64


@pytest.mark.parametrize("change", [{"split": "test"}, {"weights": "context"}, {"subset_size": 700}, {"seed": 1}])
def test_a_changed_fingerprint_rebuilds(tmp_path, ckpt, change, capsys):
    fn, data = Counting(), dataset()
    kwargs = dict(cache_dir=tmp_path, batch_size=8, device=CPU)
    cached_features("f", fn, data, fingerprint=fingerprint(ckpt), **kwargs)
    cached_features("f", fn, data, fingerprint=fingerprint(ckpt, **change), **kwargs)
    assert fn.calls == 6 and "fingerprint changed" in capsys.readouterr().err
    cached_features("f", fn, data, fingerprint=fingerprint(ckpt, **change), **kwargs)
    assert fn.calls == 6


def test_another_checkpoint_file_or_autocast_rebuilds(tmp_path, ckpt):
    other = tmp_path / "b.pt"
    other.write_bytes(b"weights-b" * 1000)
    fn, data = Counting(), dataset()
    kwargs = dict(cache_dir=tmp_path / "cache", batch_size=8, device=CPU)
    cached_features("f", fn, data, fingerprint=fingerprint(ckpt), **kwargs)
    cached_features("f", fn, data, fingerprint=fingerprint(other), **kwargs)
    assert fn.calls == 6
    cached_features("f", fn, data, fingerprint=fingerprint(other), autocast_dtype=torch.bfloat16, **kwargs)
    assert fn.calls == 9


def test_checkpoint_fingerprint_is_the_sha256_and_follows_rewrites(tmp_path, ckpt):
    assert checkpoint_fingerprint(ckpt) == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    ckpt.write_bytes(b"retrained" * 2000)  # new size (and mtime): the memo must not serve the old hash
    assert checkpoint_fingerprint(ckpt) == hashlib.sha256(b"retrained" * 2000).hexdigest()


def test_a_corrupt_cache_file_is_rebuilt(tmp_path, ckpt):
    (tmp_path / "f.safetensors").write_bytes(b"not a safetensors file")
    fn = Counting()
    x, _ = cached_features("f", fn, dataset(), cache_dir=tmp_path, fingerprint=fingerprint(ckpt), batch_size=8, device=CPU)
    assert fn.calls == 3 and x.shape == (23, 5)


def test_bad_arguments_raise(tmp_path, ckpt):
    with pytest.raises(ValueError, match="file name"):
        cached_features("../x", Counting(), dataset(), cache_dir=tmp_path, fingerprint=fingerprint(ckpt),
                        batch_size=8, device=CPU)
    with pytest.raises(ValueError, match="weights"):
        fingerprint(ckpt, weights="student")
    with pytest.raises(ValueError, match="subset_size"):
        fingerprint(ckpt, subset_size=0)
