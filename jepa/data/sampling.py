"""Deterministic data order and randomness as functions of (seed, position in the sample stream).

The sample stream is an endless sequence of per-epoch permutations. Micro-batch
``g`` of rank ``r`` is a fixed slice of it, and every random choice for it
(augmentation, masks) is seeded from the seed and ``g``, so a resumed run sees
exactly the batches it would have seen, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([k & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint64)[0] >> 1)


@dataclass(frozen=True)
class SampleKey:
    """Which sample to load and the micro-batch it belongs to."""

    batch: int
    position: int
    index: int


class StepSampler(torch.utils.data.Sampler):
    """Yields lists of :class:`SampleKey`: this rank's share of global micro-batch g, g = start, start+1, ..."""

    def __init__(
        self, num_samples: int, batch_size: int, *, seed: int, start_batch: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_samples < batch_size * world_size:
            raise ValueError(f"{num_samples} samples cannot fill one global batch of {batch_size} x {world_size} ranks")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, 1, epoch))
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        batch = self.start_batch
        cached_epoch, perm = -1, torch.empty(0, dtype=torch.long)
        global_size = self.batch_size * self.world_size
        while True:
            first = batch * global_size + self.rank * self.batch_size
            keys = []
            for position in range(first, first + self.batch_size):
                epoch, offset = divmod(position, self.num_samples)
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self._permutation(epoch)
                keys.append(SampleKey(batch, position, int(perm[offset])))
            yield keys
            batch += 1

    def __len__(self) -> int:
        raise TypeError("StepSampler is endless; training counts steps, not epochs")
