import collections
import io
import json
import tarfile

import av
import numpy as np
import pytest

from jepa.data import moving_digits
from jepa.data.fashion_mnist import DataNotFoundError
from jepa.data.moving_digits import (
    DIRECTIONS,
    MOTIONS,
    SHAPES,
    generate,
    make_clip,
    object_bank,
    shape_bank,
    write_split,
)

OPPOSITE = {0: 1, 1: 0, 2: 3, 3: 2}  # right <-> left, down <-> up
SPEED_PX = (0.5, 1.0)  # slow, fast: pixels per frame, as specified


def centre(frame: np.ndarray, floor: int = 0) -> np.ndarray:
    """Centre of mass (y, x) of the pixels brighter than ``floor`` (to ignore noise)."""
    y, x = np.mgrid[: frame.shape[0], : frame.shape[1]]
    mass = np.where(frame > floor, frame, 0).astype(np.float64)
    return np.array([(y * mass).sum(), (x * mass).sum()]) / mass.sum()


def measured_motion(clip: np.ndarray, floor: int = 0) -> tuple[int, int, float]:
    """(direction, speed, displacement in px) from the centre of mass of the first and last frames."""
    dy, dx = centre(clip[-1], floor) - centre(clip[0], floor)
    if abs(dx) > abs(dy):
        direction, shift = (0 if dx > 0 else 1), abs(dx)
    else:
        direction, shift = (2 if dy > 0 else 3), abs(dy)
    speed = int(shift / (len(clip) - 1) > sum(SPEED_PX) / 2)
    return direction, speed, shift


@pytest.fixture(scope="module", params=["shapes", "default"])
def bank(request):
    return shape_bank() if request.param == "shapes" else object_bank("val")


def test_object_moves_speed_times_duration_in_the_labelled_direction_and_stays_in_view(bank):
    for i in range(150):
        clip, labels = make_clip(np.random.default_rng(i), bank, noise=0.0)
        assert clip.shape == (16, 32, 32) and clip.dtype == np.uint8
        direction, speed, shift = measured_motion(clip)
        assert (direction, speed) == (labels["direction"], labels["speed"])
        assert labels["label"] == 2 * labels["direction"] + labels["speed"]
        assert abs(shift - SPEED_PX[speed] * 15) <= 0.5 + 1e-6  # positions are rounded to whole pixels
        delta = centre(clip[-1]) - centre(clip[0])
        assert abs(delta[0] if direction < 2 else delta[1]) < 1e-6  # no drift across the motion
        sums = clip.reshape(16, -1).sum(axis=1)
        assert (sums == sums[0]).all()  # the whole object is in every frame
        assert 0 <= labels["object"] < len(bank.names)


def test_direction_needs_time_reversed_clips_have_the_same_frames_and_the_opposite_label(bank):
    for i in range(50):
        clip, labels = make_clip(np.random.default_rng(1000 + i), bank, noise=0.0)
        reversed_clip = clip[::-1]
        assert sorted(map(bytes, clip)) == sorted(map(bytes, reversed_clip))  # same bag of frames ...
        direction, speed, _ = measured_motion(reversed_clip)
        assert (direction, speed) == (OPPOSITE[labels["direction"]], labels["speed"])  # ... other motion class


def test_brightness_and_noise_vary_per_clip():
    bank = shape_bank()
    peaks = [make_clip(np.random.default_rng(i), bank, noise=0.0)[0].max() for i in range(30)]
    assert max(peaks) - min(peaks) > 40
    noisy, _ = make_clip(np.random.default_rng(0), bank, noise=3.0)
    clean, _ = make_clip(np.random.default_rng(0), bank, noise=0.0)
    assert (noisy != clean).mean() > 0.3 and np.abs(noisy.astype(int) - clean).mean() < 4


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"frames": 30}, "does not fit"), ({"size": 33}, "even"), ({"frames": 1}, "frames")]
)
def test_rejects_impossible_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_clip(np.random.default_rng(0), shape_bank(), **kwargs)


def read_split(folder) -> dict[str, tuple[bytes, dict]]:
    samples = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.rsplit(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return {key: (parts["mp4"], json.loads(parts["json"])) for key, parts in samples.items()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("moving")
    manifests = generate(out, num_train=500, num_val=40, shard_samples=200, progress=False)
    return out, manifests


def test_generate_writes_train_and_val_shards_with_all_motion_classes(generated):
    out, manifests = generated
    train, val = read_split(out / "train"), read_split(out / "val")
    assert manifests["train"]["num_samples"] == len(train) == 500 and len(val) == 40
    assert [s["num_samples"] for s in manifests["train"]["shards"]] == [200, 200, 100]
    names = manifests["train"]["label_names"]
    assert names["label"] == list(MOTIONS) and names["direction"] == list(DIRECTIONS) and names["speed"] == ["slow", "fast"]
    counts = collections.Counter(meta["label"] for _, meta in train.values())
    assert sorted(counts) == list(range(8)) and min(counts.values()) > 30
    for _, meta in train.values():
        assert meta["label"] == 2 * meta["labels"]["direction"] + meta["labels"]["speed"]
        assert (meta["fps"], meta["num_frames"], meta["height"], meta["width"]) == (8.0, 16, 32, 32)
        assert 0 <= meta["labels"]["object"] < len(names["object"])
    assert not set(train) & set(val)
    train_clips = {mp4 for mp4, _ in train.values()}
    assert not train_clips & {mp4 for mp4, _ in val.values()}


def test_stored_clips_decode_to_the_generated_frames(generated):
    out, _ = generated
    train = read_split(out / "train")
    bank = object_bank("train")
    for i in (0, 7, 499):
        mp4, meta = train[f"train-{i:07d}"]
        with av.open(io.BytesIO(mp4)) as container:
            decoded = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])
        expected, labels = make_clip(np.random.default_rng([0, 0, i]), bank)  # clip i depends on (seed, split, i) only
        assert labels["direction"] == meta["labels"]["direction"] and labels["object"] == meta["labels"]["object"]
        assert decoded.shape == expected.shape
        assert np.abs(decoded.astype(int) - expected).mean() < 3
        assert measured_motion(decoded, floor=20)[:2] == (labels["direction"], labels["speed"])


def decoded_split(folder) -> dict[str, tuple[np.ndarray, dict]]:
    out = {}
    for key, (mp4, meta) in read_split(folder).items():
        with av.open(io.BytesIO(mp4)) as container:
            out[key] = np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)]), meta
    return out


def test_generation_is_deterministic_for_a_seed(tmp_path):
    bank = shape_bank()
    first, again = make_clip(np.random.default_rng(5), bank), make_clip(np.random.default_rng(5), bank)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_split(tmp_path / name, split="train", num_videos=6, seed=seed, objects=bank, progress=False)
    a, b, c = (decoded_split(tmp_path / name) for name in "abc")
    # x264 is not bit-exact from run to run on these tiny noisy frames (a few macroblocks may be coded
    # differently), so compare what a reader sees: identical metadata and near-identical pixels
    assert [m for _, m in a.values()] == [m for _, m in b.values()] != [m for _, m in c.values()]
    for key in a:
        assert np.abs(a[key][0].astype(int) - b[key][0]).mean() < 1.0
        assert np.abs(a[key][0].astype(int) - c[key][0]).mean() > 5.0


def test_falls_back_to_drawn_shapes_without_fashion_mnist(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise DataNotFoundError("Fashion-MNIST not found (test)")

    monkeypatch.setattr(moving_digits, "load_fashion_mnist", missing)
    with pytest.warns(UserWarning, match="drawn shapes"):
        manifest = write_split(tmp_path, split="val", num_videos=24, progress=False)
    assert manifest["label_names"]["object"] == list(SHAPES)
    objects = {meta["labels"]["object"] for _, meta in read_split(tmp_path).values()}
    assert objects <= set(range(len(SHAPES))) and len(objects) > 1
