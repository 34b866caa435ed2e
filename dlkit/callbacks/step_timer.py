"""State what the first training steps cost: compiling (torch.compile), warm-up, caches."""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import lightning as L

__all__ = ["StepTimer"]

log = logging.getLogger(__name__)


class StepTimer(L.Callback):
    """Time the first training steps and log the first one against the median of the rest.

    With ``compile=true`` the first step includes torch.compile's work, so the log line
    says what compiling cost and what a step costs after it. The numbers are also kept
    (:attr:`first_step_s`, :attr:`step_s`).

    Args:
        steps: Steps timed after the first; the line is logged once they are done (or at
            the end of the first epoch). Defaults to 20.

    Example:
        >>> timer = StepTimer()
        >>> trainer = L.Trainer(callbacks=[timer])  # after fit: timer.first_step_s, timer.step_s
    """

    def __init__(self, steps: int = 20) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"StepTimer.steps must be an integer >= 1, got {steps!r}.")
        self.steps = steps
        self.first_step_s: float | None = None
        self.step_s: float | None = None
        self._times: list[float] = []
        self._started = 0.0
        self._done = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._times, self._done = [], False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if not self._done:
            self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._done:
            return
        self._times.append(time.perf_counter() - self._started)
        if len(self._times) > self.steps:
            self._report()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._done and self._times:
            self._report()

    def _report(self) -> None:
        self._done = True
        self.first_step_s = self._times[0]
        rest = self._times[1:]
        self.step_s = statistics.median(rest) if rest else None
        if self.step_s:
            log.info("First training step %.2f s (one-off: compiling, warm-up), then %.1f ms a step (median of %d): "
                     "the first cost %.0f steps.", self.first_step_s, self.step_s * 1e3, len(rest),
                     self.first_step_s / self.step_s)
        else:
            log.info("First training step %.2f s.", self.first_step_s)
