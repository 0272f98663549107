"""Run independent pieces of torch work side by side, each on one CPU thread.

Small models (the grid world model, a few hundred planning samples) use two cores better as two
single-threaded pieces of work than as one piece split inside every operation: each operation is too
small to split well (two single-thread trainings run 1.6x faster in total than one two-thread one,
README). Torch releases the GIL inside its operations, so Python threads are enough.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

T = TypeVar("T")


def run_single_threaded(tasks: Sequence[Callable[[], T]], workers: int, *, flush_denormal: bool = False) -> list[T]:
    """The tasks' results in order, run on ``workers`` threads with one intra-op thread each.

    Torch's intra-op thread count is process-wide, so it is lowered for the tasks and restored after every
    task has finished, also where one raised (its error is raised here). Grad mode is per thread, so each task
    runs in the caller's. ``flush_denormal`` sets flush-to-zero in each worker thread (it is per thread on x86:
    a backward pass making denormal gradients is several times slower without it).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    grad = torch.is_grad_enabled()

    def run(task: Callable[[], T]) -> T:
        if flush_denormal:
            torch.set_flush_denormal(True)
        with torch.set_grad_enabled(grad):
            return task()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [_pool(workers).submit(run, task) for task in tasks]
        wait(futures)
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def best_seconds_on_one_thread(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` on one intra-op thread, after one untimed call (kernel
    selection, buffers). The fastest run is the one no other process interrupted, which makes it the fair
    figure for comparing two ways of doing one thing; the thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return min(times)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count for the whole process (planners are built per episode)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="single-threaded")
