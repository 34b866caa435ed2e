"""The Trainer behind the Keras face (``fit``/``evaluate``): quiet, no logger, no checkpoints."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import lightning as L

from dlkit.profilers import NullProfiler

__all__ = ["keras_trainer", "lightning_info"]


def keras_trainer(verbose: bool, **kwargs: Any) -> L.Trainer:
    """A ``lightning.Trainer`` as ``Task.fit`` uses it: no logger, checkpoints, summary or sanity check.

    Its profiler is :class:`~dlkit.profilers.NullProfiler` (Lightning's no-op one, minus a
    generator per hook call) unless ``kwargs`` name another.

    Keras' ``fit`` writes nothing to disk and validates no batch before training; the
    Python face does the same unless ``kwargs`` ask for more.

    Args:
        verbose: Show the progress bar.
        **kwargs: ``lightning.Trainer`` arguments; they win over the defaults.

    Example:
        >>> keras_trainer(False, max_epochs=2).max_epochs
        2
    """
    defaults: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": verbose,
        "num_sanity_val_steps": 0,
        "profiler": NullProfiler(),
    }
    return L.Trainer(**{**defaults, **kwargs})


@contextlib.contextmanager
def lightning_info(verbose: bool) -> Iterator[None]:
    """Hide Lightning's start-up notes (accelerator, tips) when ``verbose=False``, as Keras is quiet.

    Example:
        >>> with lightning_info(False):
        ...     trainer = keras_trainer(False)
    """
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
