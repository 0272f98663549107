"""Planning tests run tiny batched ops: one torch thread is fastest, and kind to a shared machine."""

import pytest


@pytest.fixture(autouse=True)
def _planning_one_thread(one_thread):
    """Every planning test runs under the shared ``one_thread`` fixture (tests/conftest.py)."""
