"""Apply a weight constraint after every optimiser step, as Keras' ``kernel_constraint`` does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

__all__ = ["WeightConstraint"]


class WeightConstraint(L.Callback):
    """Call ``constraint(network)`` after each optimiser step, so the weights always satisfy it.

    A constraint is a callable that edits a module's weights in place, such as
    :class:`dlkit.layers.MaxNorm`. It runs in ``on_train_batch_end``, after the step (and
    not after the skipped steps of gradient accumulation: Lightning's global step tells),
    under ``torch.no_grad``, on the task's ``net`` (or the whole LightningModule when it has
    none). Keras applies ``kernel_constraint`` at the same point of its loop.

    Args:
        constraint: ``constraint(module) -> None``, changing weights in place.

    Raises:
        TypeError: If ``constraint`` is not callable.

    Example:
        >>> from dlkit.layers import MaxNorm
        >>> callback = WeightConstraint(MaxNorm(max_value=3.0))
        >>> clf.fit(data, epochs=10, callbacks=[callback])  # doctest: +SKIP
    """

    def __init__(self, constraint: Callable[[nn.Module], Any]) -> None:
        if not callable(constraint):
            raise TypeError(
                f"WeightConstraint expected a callable constraint (e.g. dlkit.layers.MaxNorm(3.0)), "
                f"got {type(constraint).__name__}"
            )
        self.constraint = constraint
        self._last_step = 0  # Lightning counts optimiser steps from 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self._last_step:  # accumulating: no step was taken
            return
        self._last_step = trainer.global_step
        with torch.no_grad():
            self.constraint(getattr(pl_module, "net", pl_module))
