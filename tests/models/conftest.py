"""Shared settings for the model tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These tests run many tiny convolutions, where a second intra-op thread only adds a
    # barrier per op; with the cores shared by other processes each barrier can wait
    # milliseconds for a descheduled thread (a 20x slower test file, measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
