"""Early stopping that can hand back the best weights, as Keras' does."""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping

__all__ = ["EarlyStopping"]


class EarlyStopping(_LightningEarlyStopping):
    """Stop when ``monitor`` stops improving; optionally restore the best weights.

    Lightning's ``EarlyStopping`` with Keras' ``restore_best_weights``: the weights of
    the best epoch are kept in memory (on the CPU) and loaded back when training
    ends, whether it stopped early or ran out of epochs.

    Args:
        monitor: Logged metric to follow. Defaults to ``"val/loss"``.
        patience: Epochs without improvement before stopping. Defaults to 3.
        mode: ``"min"`` or ``"max"``. Defaults to ``"min"``.
        min_delta: Smallest change that counts as improvement. Defaults to 0.
        restore_best_weights: Load the best epoch's weights at the end. Defaults to False.
        **kwargs: Other ``lightning.pytorch.callbacks.EarlyStopping`` arguments.

    Example:
        >>> cb = EarlyStopping(monitor="val/acc", mode="max", patience=3, restore_best_weights=True)
        >>> clf.fit(data, epochs=50, callbacks=[cb])
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        patience: int = 3,
        mode: str = "min",
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(monitor=monitor, patience=patience, mode=mode, min_delta=min_delta, **kwargs)
        self.restore_best_weights = restore_best_weights
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch: int | None = None
        self._saved_score = float("nan")

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        super()._run_early_stopping_check(trainer)
        # Lightning replaces best_score exactly when the monitored value improved.
        score = float(self.best_score)
        if self.restore_best_weights and score != self._saved_score and torch.isfinite(self.best_score):
            state = trainer.lightning_module.state_dict()
            self.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
            self.best_epoch, self._saved_score = trainer.current_epoch, score

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.restore_best_weights and self.best_state is not None:
            pl_module.load_state_dict(copy.deepcopy(self.best_state))
            if self.verbose:
                print(
                    f"EarlyStopping: restored the weights of epoch {self.best_epoch} "
                    f"({self.monitor}={self._saved_score:.4f})."
                )
