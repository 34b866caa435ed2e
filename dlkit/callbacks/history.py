"""Keras' History: the metrics of every epoch, as lists."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

__all__ = ["History"]


class History(L.Callback):
    """Record ``trainer.callback_metrics`` at the end of every training epoch.

    ``fit`` returns one. Validation of an epoch finishes before
    ``on_train_epoch_end``, so each row holds both the train and the val metrics.

    Attributes:
        history: ``{"train/loss": [...], "val/acc": [...], ...}``, one value per epoch
            (NaN where a metric was not logged that epoch).
        epoch: The epoch indices recorded.

    Example:
        >>> history = clf.fit(data, epochs=3)
        >>> history.epoch, len(history.history["train/loss"])
        ([0, 1, 2], 3)
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        for key in metrics.keys() - self.history.keys():
            self.history[key] = [math.nan] * len(self.epoch)  # a metric that appears late
        self.epoch.append(trainer.current_epoch)
        for key, values in self.history.items():
            values.append(metrics.get(key, math.nan))

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callback state for every ckpt_path, testing included. Only a
        # fit that resumes from the checkpoint continues its history: testing the best
        # checkpoint after training must not cut the live history back to that epoch.
        self._restored = state_dict

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        restored = self.__dict__.pop("_restored", None)
        if restored is not None:
            self.history, self.epoch = restored["history"], restored["epoch"]

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.__dict__.pop("_restored", None)

    on_validation_start = on_predict_start = on_test_start
