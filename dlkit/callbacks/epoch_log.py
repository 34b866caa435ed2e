"""One log line per epoch with its metrics: the record a transient progress bar does not keep."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import lightning as L

__all__ = ["EpochLog", "format_epoch_line"]

log = logging.getLogger(__name__)

# Shown once as ``lr``, read from the optimiser, rather than as logged metrics.
_LR_KEYS = ("train/lr", "train/momentum")


class EpochLog(L.Callback):
    """Log one line per training epoch: its metrics, the learning rate and the epoch's time.

    The line goes through Python's ``logging`` (logger ``dlkit.callbacks.epoch_log``, level
    INFO), so under ``dlkit-train`` it reaches the console and the run's ``train.log``
    through Hydra's handlers, once each; on rank 0 only. It is written when the training
    epoch ends, after that epoch's validation, and shows every ``train/*`` and ``val/*``
    scalar in the order the task logged them, training first (``val/*`` only when a
    validation ran in this epoch), then the learning rate of the first optimiser after
    the epoch's last step (its range when parameter groups differ) and the wall time of
    the epoch, validation included. Epochs count from 0, as in checkpoint names, the progress bar and
    :class:`~dlkit.callbacks.EarlyStopping`'s messages; the number after the slash is
    the last epoch (``max_epochs - 1``).

    Args:
        digits: Significant digits of each metric. Defaults to 4.

    Example:
        >>> line = format_epoch_line(3, 39, {"train/loss": 0.4123, "val/acc": 0.9021}, [1e-3], 2.14)
        >>> line
        'epoch 3/39  train/loss 0.4123  val/acc 0.9021  lr 1.0e-03  2.1 s'
        >>> trainer = L.Trainer(callbacks=[EpochLog()])  # doctest: +SKIP
    """

    def __init__(self, digits: int = 4) -> None:
        if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
            raise ValueError(f"epoch_log.digits must be an integer >= 1, got {digits!r}.")
        self.digits = digits
        self._started: float | None = None
        self._validated = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._validated = time.perf_counter(), False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here train/* are the epoch's means and val/* (val/*_best too) the validation just run.
        if not trainer.is_global_zero:
            return
        stages = ("train/", "val/") if self._validated else ("train/",)
        metrics = {
            k: float(v) for stage in stages for k, v in trainer.callback_metrics.items()
            if k.startswith(stage) and not k.startswith(_LR_KEYS) and getattr(v, "numel", lambda: 1)() == 1
        }  # fmt: skip
        lrs = [group["lr"] for opt in trainer.optimizers[:1] for group in opt.param_groups]
        seconds = time.perf_counter() - self._started if self._started is not None else None
        last = trainer.max_epochs - 1 if trainer.max_epochs is not None and trainer.max_epochs > 0 else None
        log.info("%s", format_epoch_line(trainer.current_epoch, last, metrics, lrs, seconds, self.digits))


def format_epoch_line(
    epoch: int,
    last_epoch: int | None,
    metrics: Mapping[str, float],
    lrs: list[float],
    seconds: float | None,
    digits: int = 4,
) -> str:
    """The text of :class:`EpochLog`'s line.

    Args:
        epoch: The epoch (from 0).
        last_epoch: The last epoch of the run, or None when it has no epoch limit.
        metrics: Metric name -> value, in the order to show.
        lrs: Learning rate per parameter group (empty: no ``lr`` field).
        seconds: Wall time of the epoch, or None when unknown.
        digits: Significant digits of each metric. Defaults to 4.

    Returns:
        ``"epoch 3/39  train/loss 0.4123  ...  lr 1.0e-03  2.1 s"``, fields two spaces apart.

    Example:
        >>> format_epoch_line(0, None, {"train/loss": 2.302585}, [1e-4, 1e-3], None)
        'epoch 0  train/loss 2.303  lr 1.0e-04..1.0e-03'
    """
    fields = [f"epoch {epoch}" + (f"/{last_epoch}" if last_epoch is not None else "")]
    fields += [f"{name} {_number(value, digits)}" for name, value in metrics.items()]
    if lrs:
        low, high = min(lrs), max(lrs)
        fields.append(f"lr {low:.1e}" if low == high else f"lr {low:.1e}..{high:.1e}")
    if seconds is not None:
        fields.append(f"{seconds:.1f} s")
    return "  ".join(fields)


def _number(value: float, digits: int) -> str:
    # NaN and inf print as words, so a diverged epoch reads as one.
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
