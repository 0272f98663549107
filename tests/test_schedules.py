import pytest

from jepa.schedules import cosine, linear, warmup_cosine


def test_linear_and_cosine_endpoints():
    assert linear(0, 10, 0.996, 1.0) == 0.996 and linear(10, 10, 0.996, 1.0) == 1.0
    assert linear(5, 10, 0.0, 1.0) == pytest.approx(0.5) and linear(20, 10, 0.0, 1.0) == 1.0
    assert cosine(0, 10, 0.04, 0.4) == pytest.approx(0.04) and cosine(10, 10, 0.04, 0.4) == pytest.approx(0.4)
    assert cosine(5, 10, 0.0, 1.0) == pytest.approx(0.5)


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 100, warmup=10, start=2e-4, peak=1e-3, final=1e-6) for s in range(101)]
    assert values[0] == pytest.approx(2e-4) and values[10] == pytest.approx(1e-3)
    assert values[100] == pytest.approx(1e-6)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
