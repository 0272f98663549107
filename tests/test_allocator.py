"""The allocator switch: takes effect under glibc, is a no-op elsewhere, and changes no result."""

import platform

import pytest
import torch

from jepa.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_glibc_accepts_the_thresholds_and_results_are_unchanged():
    torch.manual_seed(0)
    x = torch.randn(64, 1024, 64)  # 16 MB: above glibc's default mmap threshold
    before = (x @ x.transpose(1, 2)).sum()
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
    assert torch.equal((x @ x.transpose(1, 2)).sum(), before)
