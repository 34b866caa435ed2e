"""Shared settings for the model tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    # These tests run many tiny convolutions, where a second intra-op thread only adds a
    # barrier per op, and with the cores shared by other processes each barrier can wait
    # for a descheduled thread.
    return None
