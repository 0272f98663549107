import itertools

import pytest

from jepa.data.sampling import StepSampler, derive_seed


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_each_epoch_is_a_permutation_and_resume_continues_the_stream():
    full = _take(StepSampler(10, 5, seed=3), 6)
    first_epoch = [k.index for batch in full[:2] for k in batch]
    assert sorted(first_epoch) == list(range(10))
    assert [k.index for b in full[2:4] for k in b] != first_epoch  # a new order each epoch
    resumed = _take(StepSampler(10, 5, seed=3, start_batch=4), 2)
    assert resumed == full[4:]


def test_ranks_split_each_global_batch_without_overlap():
    world = 2
    per_rank = [_take(StepSampler(12, 3, seed=0, rank=r, world_size=world), 2) for r in range(world)]
    seen = [k.index for rank in per_rank for batch in rank for k in batch]
    assert sorted(seen) == list(range(12))
    assert per_rank[0][0][0].batch == per_rank[1][0][0].batch == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        StepSampler(3, 4, seed=0)
    with pytest.raises(ValueError, match="outside world size"):
        StepSampler(10, 2, seed=0, rank=2, world_size=2)


def test_derive_seed_is_stable_and_spread():
    assert derive_seed(1, 2) == derive_seed(1, 2)
    assert len({derive_seed(0, i) for i in range(1000)}) == 1000
