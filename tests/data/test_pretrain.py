import torch

from jepa.data.pretrain import MaskCollator
from jepa.masks import MultiBlockMasks


def _samples(positions):
    return [(torch.full((1, 8, 8), float(p)), p % 3, p) for p in positions]


def test_each_sample_gets_its_global_batch_row_whatever_the_split():
    collate = MaskCollator(MultiBlockMasks(grid=(8, 8)), seed=5, global_batch=8)
    step = 3
    whole = collate(_samples(range(step * 8, step * 8 + 8)))
    halves = [collate(_samples(range(step * 8 + 4 * h, step * 8 + 4 * h + 4))) for h in range(2)]
    for part in range(2):  # context and targets
        joined = torch.cat([h["masks"][0][part] for h in halves])
        assert torch.equal(joined, whole["masks"][0][part])
    assert not torch.equal(whole["masks"][0].targets, collate(_samples(range(8)))["masks"][0].targets)


def test_unreadable_samples_are_dropped_with_their_rows():
    collate = MaskCollator(MultiBlockMasks(grid=(8, 8)), seed=0, global_batch=4)
    full = collate(_samples(range(4)))
    samples = _samples(range(4))
    samples[1] = (None, 0, 1)
    out = collate(samples)
    assert int(out["skipped"]) == 1
    assert torch.equal(out["masks"][0].context, full["masks"][0].context[[0, 2, 3]])
