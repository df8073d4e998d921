"""Shared pytest fixtures."""

from __future__ import annotations

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
    """Run the slow tests (subprocesses, notebook smoke runs) first, so that the xdist workers share
    them and the fast tests fill the gaps at the end, instead of one long test running alone. xdist's
    default `load` scheduler hands each worker a contiguous first chunk, which put every slow test on
    one worker; `make test` therefore uses `--dist worksteal` (idle workers take queued tests)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: order kept otherwise
