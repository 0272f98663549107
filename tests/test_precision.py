"""``precision: auto`` takes bf16 on a CPU only where this machine runs bf16 faster."""

import math

import pytest
import torch

from jepa import precision
from jepa.precision import BF16_MIN_SPEEDUP, cpu_bf16_matmul_speedup, resolve_precision

CPU = torch.device("cpu")


def test_explicit_precisions_are_taken_as_given():
    assert resolve_precision("fp32", CPU) is None
    assert resolve_precision("bf16", CPU) is torch.bfloat16
    with pytest.raises(ValueError, match="'auto', 'bf16' or 'fp32'"):
        resolve_precision("fp16", CPU)


@pytest.mark.parametrize("native, speedup, expected", [
    (True, 1.5, torch.bfloat16),          # the AMD EPYC the defaults were tuned on
    (True, 0.5, None),                    # an Intel Xeon with AVX512-BF16, no AMX: bf16 matmuls half as fast
    (True, BF16_MIN_SPEEDUP, torch.bfloat16),
    (False, 3.0, None),                   # no native bf16: emulated, never chosen
])
def test_auto_on_cpu_follows_the_measured_speedup(monkeypatch, native, speedup, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(precision, "cpu_bf16_matmul_speedup", lambda: speedup)
    assert resolve_precision("auto", CPU) is expected


def test_matmul_speedup_is_measured_on_one_thread_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    seen = []
    original = torch.Tensor.__matmul__

    def spy(x, y):
        seen.append(torch.get_num_threads())
        return original(x, y)

    try:
        torch.Tensor.__matmul__ = spy
        ratio = cpu_bf16_matmul_speedup.__wrapped__(size=64, repeats=2)
    finally:
        torch.Tensor.__matmul__ = original
    assert math.isfinite(ratio) and ratio > 0
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == threads
