"""Early stopping with Keras' exact semantics, on Lightning's public callback API."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
from torch import Tensor
from torchmetrics import MetricCollection

__all__ = ["EarlyStopping"]

log = logging.getLogger(__name__)

Mode = Literal["auto", "min", "max"]


class EarlyStopping(L.Callback):
    """Stop training when a monitored metric has stopped improving, exactly as Keras does.

    At the end of every training epoch (after that epoch's validation), the monitored
    value is compared with the best so far. An *improvement* is a value better than the
    best by more than ``min_delta``. The wait counter goes up by one every epoch and is
    reset to 0 by an improvement that also beats ``baseline``; training stops once it
    reaches ``patience``. ``patience`` counts training epochs, not validation runs: with
    ``val_check_interval < 1`` the value at the end of the epoch is used, and epochs
    without a validation (``check_val_every_n_epoch > 1``) are skipped, as Keras skips
    epochs whose logs lack the metric.

    With ``restore_best_weights`` the module's weights of the best epoch are kept on the
    CPU and loaded back when fitting ends, however it ends: stopped here, at
    ``max_epochs``, or stopped by another callback; when it ends in an exception they are
    restored too, and a warning says so. A run this callback stops ends with one log line
    (a warning when the metric became NaN or infinite): the epoch it stopped after and
    why, the best value and its epoch, and which weights the module keeps. Epochs count
    from 0, as in checkpoint names. The state (wait, best value and epoch, the best
    weights) is saved in checkpoints, so a resumed run stops where an uninterrupted one
    would and restores the same weights.

    Args:
        monitor: Logged metric to follow. Defaults to ``"val/loss"``.
        min_delta: Smallest change that counts as an improvement (its sign is ignored).
            Defaults to 0.
        patience: Epochs without improvement after which training stops. Defaults to 0.
        verbose: Also log the restored weights when the run was not stopped here. Defaults to False.
        mode: ``"min"``, ``"max"`` or ``"auto"``: a ``loss`` metric is minimised, a
            torchmetrics metric follows its ``higher_is_better``; otherwise ``"auto"``
            is an error asking for the mode. Defaults to ``"auto"``.
        baseline: A value the metric must beat for the wait counter to reset. Defaults to None.
        restore_best_weights: Load the best epoch's weights when fitting ends. Defaults to False.
        start_from_epoch: Epochs (0-based) before this one are ignored entirely. Defaults to 0.

    Example:
        >>> stopper = EarlyStopping(monitor="val/acc", patience=3, restore_best_weights=True)
        >>> stopper.mode
        'auto'
        >>> clf.fit(data, epochs=50, callbacks=[stopper])  # doctest: +SKIP
    """

    def __init__(
        self,
        monitor: str = "val/loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: bool = False,
        mode: Mode = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"early_stopping.mode must be 'auto', 'min' or 'max', got {mode!r}.")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"early_stopping.patience must be an integer >= 0, got {patience!r}.")
        if isinstance(start_from_epoch, bool) or not isinstance(start_from_epoch, int) or start_from_epoch < 0:
            raise ValueError(f"early_stopping.start_from_epoch must be an integer >= 0, got {start_from_epoch!r}.")
        if not math.isfinite(min_delta):
            raise ValueError(f"early_stopping.min_delta must be a finite number, got {min_delta!r}.")
        if baseline is not None and not math.isfinite(baseline):
            raise ValueError(f"early_stopping.baseline must be a finite number or null, got {baseline!r}.")
        self.monitor, self.mode, self.verbose = monitor, mode, verbose
        self.min_delta, self.patience, self.baseline = abs(min_delta), patience, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.direction: Literal["min", "max"] | None = None if mode == "auto" else mode
        self._reset()
        self._restored = False
        self._stopped_this_fit = False

    # ------------------------------------------------------------------ state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def _reset(self) -> None:
        self.wait = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_weights: dict[str, Tensor] | None = None
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None
        self._validated = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
            "direction": self.direction,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.wait, self.best = state_dict["wait"], state_dict["best"]
        self.best_epoch, self.best_weights = state_dict["best_epoch"], state_dict["best_weights"]
        self.stopped_epoch, self.stop_reason = state_dict["stopped_epoch"], state_dict["stop_reason"]
        self.direction = state_dict["direction"]
        self._restored = True

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Keras resets at every fit; a state loaded from a checkpoint is continued instead.
        if not self._restored:
            self._reset()
            self.direction = None if self.mode == "auto" else self.mode
        self._restored, self._stopped_this_fit = False, False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        validated, self._validated = self._validated, False
        needs_validation = self.monitor.startswith("val")
        if trainer.sanity_checking or epoch < self.start_from_epoch or (needs_validation and not validated):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = sorted(trainer.callback_metrics)
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which is not logged. Logged metrics: "
                f"{', '.join(logged) or 'none'}. Set early_stopping.monitor (or task.monitor) to one of them."
            )
        current = float(value)
        if self.direction is None:
            self.direction = _infer_direction(self.monitor, pl_module)
        if not math.isfinite(current):
            self._stop(trainer, epoch, f"{self.monitor} became {current} at epoch {epoch}")
            return
        if self.restore_best_weights and self.best_weights is None:
            # Keras keeps the first eligible epoch's weights, so there is always a snapshot.
            self.best_weights = _snapshot(pl_module)
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = _snapshot(pl_module)
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self._stop(trainer, epoch, f"{self.monitor} did not improve for {self.wait} epochs")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._stopped_this_fit:
            self._restore(pl_module, ended="")
            return
        restored = self._load_best(pl_module)
        if restored:
            kept = f"restored the weights of epoch {self.best_epoch}"
        else:
            kept = f"kept the weights of epoch {self.stopped_epoch} (restore_best_weights={self.restore_best_weights})"
        best = f"best {self.monitor}={self.best:.6g} at epoch {self.best_epoch}" if self.best is not None else "no best"
        # A non-finite metric is a failure the user must see, not a routine stop.
        level = logging.WARNING if self.stop_reason and "became" in self.stop_reason else logging.INFO
        log.log(level, "EarlyStopping: stopped after epoch %d (%s); %s; %s.", self.stopped_epoch, self.stop_reason,
                best, kept)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore(pl_module, ended=f"the run failed ({type(exception).__name__}: {exception}); ")

    # ------------------------------------------------------------------ internals
    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.direction == "max":
            return value - self.min_delta > reference
        return value + self.min_delta < reference

    def _stop(self, trainer: L.Trainer, epoch: int, reason: str) -> None:
        # Logged once, when fitting ends and the kept weights are known (on_fit_end).
        self.stopped_epoch, self.stop_reason, self._stopped_this_fit = epoch, reason, True
        trainer.should_stop = True

    def _load_best(self, pl_module: L.LightningModule) -> bool:
        if not (self.restore_best_weights and self.best_weights is not None):
            return False
        pl_module.load_state_dict(self.best_weights)
        return True

    def _restore(self, pl_module: L.LightningModule, ended: str) -> None:
        if not self._load_best(pl_module):
            return
        what = f"restored the weights of epoch {self.best_epoch} ({self.monitor}={self.best:.6g})"
        if ended or (self.stop_reason and "became" in self.stop_reason):
            # Never silent about weights taken from a run that did not finish normally.
            log.warning("EarlyStopping: %s%s%s.", ended, f"{self.stop_reason}; " if self.stop_reason else "", what)
        elif self.verbose:
            log.info("EarlyStopping: %s.", what)


def _snapshot(pl_module: L.LightningModule) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}


def _infer_direction(monitor: str, pl_module: L.LightningModule) -> Literal["min", "max"]:
    """Keras' ``mode="auto"``: losses go down, a metric object says which way it goes."""
    name = monitor.rsplit("/", 1)[-1].removesuffix("_best")
    if name == "loss" or name.endswith("_loss"):
        return "min"
    base = monitor.removesuffix("_best")
    for module in pl_module.modules():
        if isinstance(module, MetricCollection):
            for key, metric in module.items(keep_base=False, copy_state=False):
                better = getattr(metric, "higher_is_better", None)
                if key == base and better is not None:
                    return "max" if better else "min"
    raise ValueError(
        f"EarlyStopping(mode='auto') cannot tell whether {monitor!r} should go up or down. "
        "Pass mode='max' to stop on the highest value or mode='min' for the lowest."
    )
