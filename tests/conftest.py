"""Shared pytest fixtures."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (faster on the shared 2-core machine); restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_collection_modifyitems(config, items):
    """Start every xdist worker on its share of the slow tests (subprocesses, notebook smoke runs).

    xdist's `worksteal` scheduler (what `make test` uses) first hands worker i the i-th contiguous
    chunk of the collection, then lets an idle worker steal the tail of the busiest queue. So each
    chunk here begins with every k-th slow test (k workers, round robin) and ends with fast tests,
    which fill the gaps at the end instead of one long test running alone. Without xdist: slow first.
    """
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    fast = [item for item in items if item.get_closest_marker("slow") is None]
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        items[:] = slow + fast
        return
    ordered, remaining = [], len(items)
    for i in range(workers):  # the chunk sizes of xdist.scheduler.worksteal's first distribution
        size = remaining // (workers - i)
        remaining -= size
        share = slow[i::workers]
        take = max(size - len(share), 0)
        ordered += share + fast[:take]
        fast = fast[take:]
    items[:] = ordered + fast
