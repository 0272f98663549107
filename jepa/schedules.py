"""Learning-rate, weight-decay and EMA-momentum schedules as pure functions of the step.

Being functions of the step (not stateful schedulers) is what makes resume
exact: a resumed run recomputes the same values from the step it loads.
"""

from __future__ import annotations

import math


def linear(step: int, total: int, start: float, end: float) -> float:
    """Straight line from ``start`` at step 0 to ``end`` at ``total`` (held after)."""
    t = min(max(step, 0) / max(total, 1), 1.0)
    return start + t * (end - start)


def cosine(step: int, total: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at step 0 to ``end`` at ``total`` (held after)."""
    t = min(max(step, 0) / max(total, 1), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def warmup_cosine(step: int, total: int, *, warmup: int, start: float, peak: float, final: float) -> float:
    """Linear warmup ``start`` -> ``peak`` over ``warmup`` steps, then cosine to ``final`` at ``total``."""
    if step < warmup:
        return linear(step, warmup, start, peak)
    return cosine(step - warmup, total - warmup, peak, final)
