"""The network's layer table when training starts: the same table as ``task.summary()``, logged."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from torch import Tensor

__all__ = ["ModelSummary"]

log = logging.getLogger(__name__)


class ModelSummary(LightningModelSummary):
    """Log Keras' table of the network's layers, output shapes and parameter counts at the start of training.

    The table is the task's own ``summary()`` (``task.net`` only: no loss or metric
    containers), written through Python's ``logging`` (logger
    ``dlkit.callbacks.model_summary``), so under ``dlkit-train`` it is on the console and
    in ``train.log``. It is made when training starts, after every ``on_fit_start``, so
    layers frozen there (:class:`~dlkit.callbacks.LayerFreezing`) count as non-trainable.
    A LightningModule without a ``summary`` method gets Lightning's table instead.

    It is a Lightning ``ModelSummary``, so the Trainer adds no default table of its own.

    Example:
        >>> trainer = L.Trainer(callbacks=[ModelSummary()])  # doctest: +SKIP
        >>> # log: Model: "LeNet5" / Layer (type)  Output Shape  Param #  Trainable ...
    """

    def __init__(self) -> None:
        super().__init__(max_depth=1)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # the table waits for on_train_start, when freezing callbacks have run

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = getattr(pl_module, "summary", None)
        if not callable(summary):
            super().on_fit_start(trainer, pl_module)
            return
        example = pl_module.example_input_array
        if isinstance(example, Tensor):
            # A true-half network (precision=bf16-true) takes the input its batches get.
            pl_module.example_input_array = trainer.precision_plugin.convert_input(example)
        try:
            # Every rank runs the forward pass (a sharded strategy needs all of them); rank 0 logs.
            with trainer.precision_plugin.forward_context():
                summary(print_fn=lambda table: log.info("%s", table) if trainer.is_global_zero else None)
        finally:
            pl_module.example_input_array = example
