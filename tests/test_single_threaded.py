"""Independent torch work on worker threads with one intra-op thread each: order, thread count, grad mode,
errors and flush-to-zero."""

import threading
import time

import pytest
import torch

from jepa.single_threaded import best_seconds_on_one_thread, run_single_threaded


def test_results_in_order_on_workers_with_one_thread_each_and_the_count_restored():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = []

        def task(i):
            seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads()))
            return i * i

        assert run_single_threaded([lambda i=i: task(i) for i in range(5)], 2) == [0, 1, 4, 9, 16]
        assert seen == [(False, 1)] * 5
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_tasks_run_in_the_callers_grad_mode():
    task = torch.is_grad_enabled
    assert run_single_threaded([task, task], 2) == [True, True]
    with torch.no_grad():
        assert run_single_threaded([task, task], 2) == [False, False]


def test_an_error_is_raised_after_every_task_finished_and_the_count_restored():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(torch.get_num_threads())

    def broken():
        raise RuntimeError("task failed")

    try:
        with pytest.raises(RuntimeError, match="task failed"):
            run_single_threaded([broken, slow], 2)
        assert finished == [1]  # the slow task still ran single-threaded: the count went back only after it
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="workers"):
        run_single_threaded([slow], 0)


def test_flush_denormal_applies_in_each_worker_thread():
    """Flush-to-zero is per thread; a pool created while the caller has it off keeps denormals unless asked."""
    tiny = torch.tensor([1e-39])  # a float32 denormal
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    kept = run_single_threaded([lambda: float(tiny * 2)], 3)
    flushed = run_single_threaded([lambda: float(tiny * 2)], 3, flush_denormal=True)
    torch.set_flush_denormal(False)
    assert kept == [pytest.approx(2e-39, rel=1e-3)] and flushed == [0.0]


def test_best_seconds_times_on_one_thread_after_an_untimed_call_and_restores_threads():
    threads, seen = torch.get_num_threads(), []
    best = best_seconds_on_one_thread(lambda: seen.append(torch.get_num_threads()), repeats=3)
    assert seen == [1, 1, 1, 1] and torch.get_num_threads() == threads  # one untimed call, then three timed
    assert 0 <= best < 0.1
